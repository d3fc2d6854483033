"""The HTTP layer: routes, the streamed reply and its wire formats, the OpenAI-compatible API,
the web page, and the one mapping of errors to responses. Nothing below it imports it."""
