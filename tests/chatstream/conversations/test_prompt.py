from __future__ import annotations

import pytest

from chatstream import ChatPrompt, Message
from chatstream.errors import InputTooLong, NothingToRegenerate
from sessions.serializer import dump_fields, dumps, load_fields, loads

from ..scripted import WordRenderer


def conversation(turns: int, system_prompt: str | None = "Be brief.") -> ChatPrompt:
    prompt = ChatPrompt(system_prompt)
    for index in range(turns):
        prompt.add_user_message(f"question {index}")
        prompt.set_reply(
            f"answer {index}",
            message_id=f"m{index}",
            finish_reason="stop",
            prompt_tokens=5,
            completion_tokens=2,
        )
    return prompt.bind(WordRenderer(), context_len=None, max_new_tokens=0)


def test_round_trip_through_the_session_serializer() -> None:
    prompt = conversation(2)
    prompt.add_user_message("unanswered")
    restored = loads(dumps({"chat_prompt": prompt}))["chat_prompt"]
    assert isinstance(restored, ChatPrompt)
    assert restored == prompt
    assert restored.messages[1] == Message("assistant", "answer 0", "m0", "stop", 5, 2)


@pytest.mark.parametrize(
    "data",
    [
        {"messages": [{"role": "wizard", "content": "x"}]},
        {"messages": [{"role": "user", "content": 3}]},
        {"messages": [{"role": "assistant", "content": "x", "finish_reason": "boom"}]},
        {"messages": "nope"},
        {"system_prompt": 5},
    ],
)
def test_from_dict_refuses_malformed_data(data: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ChatPrompt.from_dict(data)


def test_create_prompt_renders_with_the_generation_prompt() -> None:
    prompt = conversation(1)
    prompt.add_user_message("next")
    assert prompt.create_prompt() == (
        "system: Be brief.\nuser: question 0\nassistant: answer 0\nuser: next\nassistant:"
    )


def test_oldest_turns_go_first_and_the_system_prompt_stays() -> None:
    prompt = conversation(5)
    prompt.add_user_message("last one")
    full = prompt.create_prompt()
    prompt.bind(WordRenderer(), context_len=len(full.split()) - 1 + 4, max_new_tokens=4)
    kept = prompt.fitted_messages()
    assert kept[0] == {"role": "system", "content": "Be brief."}
    assert kept[1] == {"role": "user", "content": "question 1"}
    assert kept[-1] == {"role": "user", "content": "last one"}
    assert len(prompt.messages) == 11


def test_a_last_turn_that_cannot_fit_is_input_too_long() -> None:
    prompt = conversation(0)
    prompt.add_user_message("far too many words for this context")
    prompt.bind(WordRenderer(), context_len=8, max_new_tokens=4)
    with pytest.raises(InputTooLong):
        prompt.create_prompt()


def test_regenerate_drops_the_last_reply_only() -> None:
    prompt = conversation(2)
    prompt.drop_last_reply()
    assert [m.content for m in prompt.messages] == ["question 0", "answer 0", "question 1"]
    prompt.drop_last_reply()  # a user turn without reply regenerates as it is
    assert prompt.messages[-1].content == "question 1"
    with pytest.raises(NothingToRegenerate):
        ChatPrompt("system only").drop_last_reply()


def test_set_reply_replaces_a_reply() -> None:
    prompt = conversation(1)
    prompt.set_reply(
        "again", message_id="m9", finish_reason="length", prompt_tokens=1, completion_tokens=1
    )
    assert [m.content for m in prompt.messages] == ["question 0", "again"]


def test_unbound_prompt_says_so() -> None:
    with pytest.raises(RuntimeError, match="bind"):
        ChatPrompt().create_prompt()


def test_a_turn_changes_two_message_fields_whatever_the_history() -> None:
    prompt = conversation(100)
    before = dump_fields("chat_prompt", prompt)
    prompt.add_user_message("one more")
    prompt.set_reply(
        "ok", message_id="m", finish_reason="stop", prompt_tokens=1, completion_tokens=1
    )
    after = dump_fields("chat_prompt", prompt)
    changed = {name for name, text in after.items() if before.get(name) != text}
    assert len(changed) == 3  # the head (message count) and the two new messages
    assert load_fields("chat_prompt", after) == prompt


@pytest.mark.parametrize("turns", [1, 2, 3, 7, 20])
def test_fitting_keeps_the_most_recent_turns_that_fit(turns: int) -> None:
    prompt = conversation(turns - 1)
    prompt.add_user_message("the last question")
    renderer = WordRenderer()
    starts = [i for i, m in enumerate(prompt.messages) if m.role == "user"]
    full = renderer.count_tokens(prompt.create_prompt())
    for budget in range(full + 2):
        prompt.bind(renderer, context_len=budget, max_new_tokens=0)
        fitting = [
            s
            for s in starts
            if renderer.count_tokens(
                renderer.render(prompt.to_messages(s), add_generation_prompt=True)
            )
            <= budget
        ]
        if not fitting:
            with pytest.raises(InputTooLong):
                prompt.fitted_messages()
        else:
            assert prompt.fitted_messages() == prompt.to_messages(fitting[0])
