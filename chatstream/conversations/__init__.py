"""Conversations: :class:`~chatstream.conversations.prompt.ChatPrompt`, one conversation and
how it renders into the model's prompt."""
