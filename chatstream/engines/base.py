"""The engine contract: what the chat layer needs from something that generates text.

An engine turns a rendered prompt into a stream of text deltas. It runs its model off the event
loop, honours the sampling parameters, stops on stop strings, and stops within one decoding step
when the consumer closes the stream (``aclose()`` on the async iterator, or task cancellation).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

FinishReason = Literal["stop", "length", "cancelled", "error"]


@dataclass(frozen=True)
class GenerationParams:
    """Sampling parameters of one generation. ``temperature == 0`` means greedy decoding.

    The field defaults are chatstream's sampling defaults, and this is their one home: read
    them as class attributes (``GenerationParams.max_new_tokens``; hence no ``slots``).
    """

    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 50
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One generation: the rendered ``prompt`` plus the conversation it was rendered from.

    ``messages`` are ``{"role": ..., "content": ...}`` dicts (system prompt included), to be
    answered with a new assistant turn. The transformers engines tokenize ``messages`` with
    their renderer, so that message text never becomes a control token; ``prompt`` is what
    that renders to (the mock engine counts it), and is tokenized as it is only when there are
    no ``messages``: a prompt of the caller's own making.
    """

    prompt: str
    params: GenerationParams = field(default_factory=GenerationParams)
    messages: Sequence[dict[str, str]] = ()
    request_id: str = ""
    assistant_prefix: str = ""
    """The start of the reply, already written (a reply being continued): the prompt ends with
    it after the assistant's turn opens, and the model goes on from there. Plain text, like
    message contents; the engine's reply holds only what comes after it."""


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the reply, always whole UTF-8 characters."""

    text: str


@dataclass(frozen=True, slots=True)
class GenerationDone:
    """The last event of every stream that was not closed by its consumer."""

    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    """Of the prompt tokens, those whose keys and values came from a cache (not run again)."""


GenerationEvent = TextDelta | GenerationDone


@runtime_checkable
class PromptRenderer(Protocol):
    """Renders a conversation into the model's prompt text and counts its tokens.

    ``stop_strings`` are the model's end-of-turn strings in this prompt format (``<|im_end|>``
    for ChatML): the engine ends every reply at them. ``count_prompt_tokens`` is what the
    prompt for the next reply to ``messages`` costs, counted as the engine will run it (the
    budget that a conversation is fitted to); ``count_tokens`` counts a text (a reply).
    """

    @property
    def stop_strings(self) -> tuple[str, ...]: ...

    def render(self, messages: Sequence[dict[str, str]], *, add_generation_prompt: bool) -> str: ...

    def count_tokens(self, text: str) -> int: ...

    def count_prompt_tokens(self, messages: Sequence[dict[str, str]]) -> int: ...


@runtime_checkable
class Engine(Protocol):
    """Something that generates text for the chat layer.

    ``slots`` is how many generations it runs at once on this instance: the admission layer
    never gives it more. ``renderer`` is how prompts are built for its model. ``stop_strings``
    are the model's own end-of-turn strings: the engine ends every reply at them besides the
    request's ``params.stop``, so callers never add them. An engine that depends on something
    outside this process (a remote one's upstream) may also have ``async def check_ready()``,
    raising a :class:`~chatstream.errors.ChatStreamError` when it cannot generate: ``/readyz``
    calls it. An engine whose first generation pays one-time costs may have
    ``async def warm_up()``, which :meth:`~chatstream.ChatStream.warm_up` runs before serving.
    An engine that cannot go on from a request's ``assistant_prefix`` has
    ``continues_replies = False``: a turn that continues a reply is then refused (422).
    """

    @property
    def slots(self) -> int: ...

    @property
    def stop_strings(self) -> tuple[str, ...]: ...

    @property
    def renderer(self) -> PromptRenderer: ...

    @property
    def model_name(self) -> str: ...

    def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationEvent, None]:
        """Stream the reply: ``TextDelta`` events, then exactly one ``GenerationDone``.

        Closing the iterator early (``aclose()``) or cancelling the consuming task cancels the
        generation within one decoding step and frees its slot.
        """
        ...

    async def aclose(self) -> None:
        """Stop worker threads and free the model's resources."""
        ...
