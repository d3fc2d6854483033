"""Engines: what generates the replies.

``base`` holds the contract (:class:`~.base.Engine`, :class:`~.base.PromptRenderer`, the
requests and events) and ``config`` the batching defaults; neither imports torch. ``mock`` is
the engine without a model. The transformers engines share ``tokens`` (token ids to a reply's
events), ``channel`` (the worker-to-event-loop link), ``prompt_tokens``, ``rendering``,
``detokenize`` and ``stopping``: ``hf`` runs ``generate`` per stream, ``batched`` batches them.
``remote`` streams from an OpenAI-compatible server (``completion_stream`` reads one reply,
``remote_config`` parses its model URL, ``estimate`` counts tokens without a tokenizer).
"""
