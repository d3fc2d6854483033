"""The chat core: a generation run and a chat turn around it, sampling parameters, feedback,
and how a stream ended (the completion callback). No HTTP here."""
