from ragline.v1 import conversation_pb2 as _conversation_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AppendStoredTurnRequest(_message.Message):
    __slots__ = ("tenant", "conversation_id", "turn")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    TURN_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    conversation_id: str
    turn: _conversation_pb2.Turn
    def __init__(self, tenant: _Optional[str] = ..., conversation_id: _Optional[str] = ..., turn: _Optional[_Union[_conversation_pb2.Turn, _Mapping]] = ...) -> None: ...

class AppendStoredTurnResponse(_message.Message):
    __slots__ = ("conversation", "turn")
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    TURN_FIELD_NUMBER: _ClassVar[int]
    conversation: _conversation_pb2.Conversation
    turn: _conversation_pb2.Turn
    def __init__(self, conversation: _Optional[_Union[_conversation_pb2.Conversation, _Mapping]] = ..., turn: _Optional[_Union[_conversation_pb2.Turn, _Mapping]] = ...) -> None: ...

class GetStoredConversationRequest(_message.Message):
    __slots__ = ("tenant", "conversation_id", "last_turns")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_TURNS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    conversation_id: str
    last_turns: int
    def __init__(self, tenant: _Optional[str] = ..., conversation_id: _Optional[str] = ..., last_turns: _Optional[int] = ...) -> None: ...

class GetStoredConversationResponse(_message.Message):
    __slots__ = ("conversation", "turns")
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    TURNS_FIELD_NUMBER: _ClassVar[int]
    conversation: _conversation_pb2.Conversation
    turns: _containers.RepeatedCompositeFieldContainer[_conversation_pb2.Turn]
    def __init__(self, conversation: _Optional[_Union[_conversation_pb2.Conversation, _Mapping]] = ..., turns: _Optional[_Iterable[_Union[_conversation_pb2.Turn, _Mapping]]] = ...) -> None: ...

class ListStoredConversationsRequest(_message.Message):
    __slots__ = ("tenant", "page_size", "page_token")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    page_size: int
    page_token: str
    def __init__(self, tenant: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListStoredConversationsResponse(_message.Message):
    __slots__ = ("conversations", "next_page_token")
    CONVERSATIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    conversations: _containers.RepeatedCompositeFieldContainer[_conversation_pb2.Conversation]
    next_page_token: str
    def __init__(self, conversations: _Optional[_Iterable[_Union[_conversation_pb2.Conversation, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteStoredConversationRequest(_message.Message):
    __slots__ = ("tenant", "conversation_id")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    conversation_id: str
    def __init__(self, tenant: _Optional[str] = ..., conversation_id: _Optional[str] = ...) -> None: ...

class DeleteStoredConversationResponse(_message.Message):
    __slots__ = ("deleted_turns",)
    DELETED_TURNS_FIELD_NUMBER: _ClassVar[int]
    deleted_turns: int
    def __init__(self, deleted_turns: _Optional[int] = ...) -> None: ...
