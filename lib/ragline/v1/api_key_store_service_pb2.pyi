from ragline.v1 import admin_service_pb2 as _admin_service_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateStoredApiKeyRequest(_message.Message):
    __slots__ = ("api_key", "secret_sha256")
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    SECRET_SHA256_FIELD_NUMBER: _ClassVar[int]
    api_key: _admin_service_pb2.ApiKey
    secret_sha256: str
    def __init__(self, api_key: _Optional[_Union[_admin_service_pb2.ApiKey, _Mapping]] = ..., secret_sha256: _Optional[str] = ...) -> None: ...

class CreateStoredApiKeyResponse(_message.Message):
    __slots__ = ("api_key",)
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    api_key: _admin_service_pb2.ApiKey
    def __init__(self, api_key: _Optional[_Union[_admin_service_pb2.ApiKey, _Mapping]] = ...) -> None: ...

class LookupStoredApiKeyRequest(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...

class LookupStoredApiKeyResponse(_message.Message):
    __slots__ = ("api_key", "secret_sha256")
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    SECRET_SHA256_FIELD_NUMBER: _ClassVar[int]
    api_key: _admin_service_pb2.ApiKey
    secret_sha256: str
    def __init__(self, api_key: _Optional[_Union[_admin_service_pb2.ApiKey, _Mapping]] = ..., secret_sha256: _Optional[str] = ...) -> None: ...

class ListStoredApiKeysRequest(_message.Message):
    __slots__ = ("tenant", "page_size", "page_token")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    page_size: int
    page_token: str
    def __init__(self, tenant: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListStoredApiKeysResponse(_message.Message):
    __slots__ = ("api_keys", "next_page_token")
    API_KEYS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    api_keys: _containers.RepeatedCompositeFieldContainer[_admin_service_pb2.ApiKey]
    next_page_token: str
    def __init__(self, api_keys: _Optional[_Iterable[_Union[_admin_service_pb2.ApiKey, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RevokeStoredApiKeyRequest(_message.Message):
    __slots__ = ("tenant", "key_id")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    key_id: str
    def __init__(self, tenant: _Optional[str] = ..., key_id: _Optional[str] = ...) -> None: ...

class RevokeStoredApiKeyResponse(_message.Message):
    __slots__ = ("api_key",)
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    api_key: _admin_service_pb2.ApiKey
    def __init__(self, api_key: _Optional[_Union[_admin_service_pb2.ApiKey, _Mapping]] = ...) -> None: ...
