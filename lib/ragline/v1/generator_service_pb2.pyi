from ragline.v1 import common_pb2 as _common_pb2
from ragline.v1 import conversation_pb2 as _conversation_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GenerateRequest(_message.Message):
    __slots__ = ("question", "passages", "options", "history")
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    PASSAGES_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    question: str
    passages: _containers.RepeatedCompositeFieldContainer[_common_pb2.Passage]
    options: _common_pb2.GenerationOptions
    history: _containers.RepeatedCompositeFieldContainer[_conversation_pb2.Turn]
    def __init__(self, question: _Optional[str] = ..., passages: _Optional[_Iterable[_Union[_common_pb2.Passage, _Mapping]]] = ..., options: _Optional[_Union[_common_pb2.GenerationOptions, _Mapping]] = ..., history: _Optional[_Iterable[_Union[_conversation_pb2.Turn, _Mapping]]] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("text", "citations", "usage", "finish_reason", "model", "passages_used", "sentences")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CITATIONS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PASSAGES_USED_FIELD_NUMBER: _ClassVar[int]
    SENTENCES_FIELD_NUMBER: _ClassVar[int]
    text: str
    citations: _containers.RepeatedCompositeFieldContainer[_common_pb2.Citation]
    usage: _common_pb2.TokenUsage
    finish_reason: _common_pb2.FinishReason
    model: str
    passages_used: int
    sentences: _containers.RepeatedCompositeFieldContainer[_common_pb2.SentenceSupport]
    def __init__(self, text: _Optional[str] = ..., citations: _Optional[_Iterable[_Union[_common_pb2.Citation, _Mapping]]] = ..., usage: _Optional[_Union[_common_pb2.TokenUsage, _Mapping]] = ..., finish_reason: _Optional[_Union[_common_pb2.FinishReason, str]] = ..., model: _Optional[str] = ..., passages_used: _Optional[int] = ..., sentences: _Optional[_Iterable[_Union[_common_pb2.SentenceSupport, _Mapping]]] = ...) -> None: ...

class GenerateStreamRequest(_message.Message):
    __slots__ = ("question", "passages", "options", "history")
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    PASSAGES_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    question: str
    passages: _containers.RepeatedCompositeFieldContainer[_common_pb2.Passage]
    options: _common_pb2.GenerationOptions
    history: _containers.RepeatedCompositeFieldContainer[_conversation_pb2.Turn]
    def __init__(self, question: _Optional[str] = ..., passages: _Optional[_Iterable[_Union[_common_pb2.Passage, _Mapping]]] = ..., options: _Optional[_Union[_common_pb2.GenerationOptions, _Mapping]] = ..., history: _Optional[_Iterable[_Union[_conversation_pb2.Turn, _Mapping]]] = ...) -> None: ...

class GenerateStreamResponse(_message.Message):
    __slots__ = ("delta", "final")
    DELTA_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    delta: str
    final: GenerateResponse
    def __init__(self, delta: _Optional[str] = ..., final: _Optional[_Union[GenerateResponse, _Mapping]] = ...) -> None: ...

class RewriteQuestionRequest(_message.Message):
    __slots__ = ("question", "history")
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    question: str
    history: _containers.RepeatedCompositeFieldContainer[_conversation_pb2.Turn]
    def __init__(self, question: _Optional[str] = ..., history: _Optional[_Iterable[_Union[_conversation_pb2.Turn, _Mapping]]] = ...) -> None: ...

class RewriteQuestionResponse(_message.Message):
    __slots__ = ("standalone_question", "method", "model")
    STANDALONE_QUESTION_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    standalone_question: str
    method: _conversation_pb2.RewriteMethod
    model: str
    def __init__(self, standalone_question: _Optional[str] = ..., method: _Optional[_Union[_conversation_pb2.RewriteMethod, str]] = ..., model: _Optional[str] = ...) -> None: ...
