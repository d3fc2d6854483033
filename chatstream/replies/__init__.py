"""Replies that outlive their connection: a chat reply runs on its own, followed by the client
that asked for it and by any that attach (another tab, a reloaded page, another instance),
recorded in Redis, and stopped from anywhere or once nobody follows it for a while."""
