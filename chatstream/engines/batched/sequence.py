"""One request's state in the batched engine, shared by its consumer and the worker thread."""

from __future__ import annotations

from ..base import GenerationParams, GenerationRequest
from ..channel import TokenChannel
from .prefix_cache import PrefixMatch


class SequenceState:
    """A request from the moment it waits until its stream ends.

    The consumer on the event loop reads :attr:`channel`; everything else belongs to the
    worker thread, which fills ``token_ids`` with the prompt's ids (when the request is first
    considered for a prefill) and then appends each generated token.
    """

    def __init__(self, request: GenerationRequest) -> None:
        self.request = request
        self.channel = TokenChannel()
        self.generated = 0
        # The prompt's ids and the reply's so far (the repetition penalty's history).
        self.token_ids: list[int] = []
        # The start of the prompt found in the prefix cache, until the prefill takes it.
        self.prefix: PrefixMatch | None = None

    @property
    def params(self) -> GenerationParams:
        return self.request.params

    @property
    def cancelled(self) -> bool:
        """Whether the consumer left (it closed the stream, or the engine closed)."""
        return self.channel.cancelled.is_set()

    @property
    def cached_tokens(self) -> int:
        return self.channel.cached_tokens

    def end(self, error: BaseException | None = None) -> None:
        """End the stream (once), with the exception that failed it, if any."""
        self.prefix = None
        self.channel.end(error)
