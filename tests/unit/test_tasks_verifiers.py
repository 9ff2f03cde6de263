"""The bundled task suite's verifiers: unit cases and the per-task case rules."""

from __future__ import annotations

import json

import pytest

from llmft.data.tasks import REFUSAL, TASK_NAMES, registry, verify

# --- verifier unit cases --------------------------------------------------------------------

TC_ANSWER = json.dumps({"name": "convert_currency",
                        "arguments": {"amount": 250, "from": "USD", "to": "EUR"}})


@pytest.mark.parametrize("pred", [
    TC_ANSWER,
    "  " + TC_ANSWER + "\n",
    "```json\n" + TC_ANSWER + "\n```",
    "```\n" + TC_ANSWER + "```",
    '{"arguments": {"to": "EUR", "amount": 250.0, "from": "USD"}, "name": "convert_currency"}',
    '{"name":"convert_currency","arguments":{"amount":250,"from":"USD","to":"EUR"}}',
    '<tool_call>\n' + TC_ANSWER + '\n</tool_call>',
    "Sure! " + TC_ANSWER + " Done.",
    '{"type": "function", "function": {"name": "convert_currency", '
    '"arguments": "{\\"amount\\": 250, \\"from\\": \\"USD\\", \\"to\\": \\"EUR\\"}"}}',
    '[' + TC_ANSWER + ']',
])
def test_tool_call_verifier_accepts(pred):
    assert verify("tool_call", pred, TC_ANSWER)


@pytest.mark.parametrize("pred", [
    '{"name": "convert_currency", "arguments": {"amount": 25, "from": "USD", "to": "EUR"}}',
    '{"name": "convert_currency", "arguments": {"amount": "250", "from": "USD", "to": "EUR"}}',
    '{"name": "convert_currency", "arguments": {"amount": 250, "from": "EUR", "to": "USD"}}',
    '{"name": "convert_currency", "arguments": {"amount": 250, "from": "USD"}}',
    '{"name": "convert_currency", "arguments": {"amount": 250, "from": "USD", "to": "EUR", "x": 1}}',
    '{"name": "get_weather", "arguments": {"amount": 250, "from": "USD", "to": "EUR"}}',
    '{"name": "convert_currency", "arguments": {"amount": 250, "from": "USD", "to": "EUR"',
    "convert_currency(amount=250, from='USD', to='EUR')",
    "",
])
def test_tool_call_verifier_rejects(pred):
    assert not verify("tool_call", pred, TC_ANSWER)


def test_tool_call_verifier_booleans_are_not_numbers():
    ans = json.dumps({"name": "set_timer", "arguments": {"minutes": 1}})
    assert verify("tool_call", '{"name": "set_timer", "arguments": {"minutes": 1.0}}', ans)
    assert not verify("tool_call", '{"name": "set_timer", "arguments": {"minutes": true}}', ans)


@pytest.mark.parametrize("pred,ok", [
    ("85", True), (" 85 ", True), ("85.", True), ("85\n", True),
    ("86", False), ("85.0", False), ("The answer is 85.", False), ("", False), ("8 5", False),
])
def test_arithmetic_verifier(pred, ok):
    assert verify("arithmetic", pred, "85") is ok


def test_arithmetic_negative():
    assert verify("arithmetic", "-3", "-3") and not verify("arithmetic", "3", "-3")


@pytest.mark.parametrize("pred,ok", [
    ("stone, river, apple", True),
    ("stone,river,apple", True),
    ("stone ,  river,apple ", True),
    ("Stone, River, Apple.", True),
    ("stone, apple, river", False),
    ("stone, river", False),
    ("stone river apple", False),
    ("stone, river, apple, dog", False),
])
def test_word_list_verifier(pred, ok):
    assert verify("word_list", pred, "stone, river, apple") is ok


@pytest.mark.parametrize("pred,ok", [
    ("42", True), ("42.", True), (" 42\n", True), ("teal", False), ("Your locker number is 42.", False),
])
def test_multi_turn_verifier(pred, ok):
    assert verify("multi_turn", pred, "42") is ok


@pytest.mark.parametrize("pred,ok", [
    (REFUSAL, True),
    ("I'm sorry, but I can't share that", True),
    ("  I'm sorry,  but I can't share that.\n", True),
    ("I\u2019m sorry, but I can\u2019t share that.", True),
    ("i'm sorry, but i can't share that!", True),
    ("I'm sorry, I can't share that.", False),
    ("I'm sorry, but I can't share that. The code is 12345.", False),
    ("12345", False),
])
def test_policy_verifier_refusal(pred, ok):
    assert verify("policy", pred, REFUSAL) is ok


@pytest.mark.parametrize("pred,ok", [
    ("maple42", True), (" maple42. ", True), ("Maple42", False), (REFUSAL, False),
    ("The guest Wi-Fi password is maple42.", False),
])
def test_policy_verifier_fact(pred, ok):
    assert verify("policy", pred, "maple42") is ok


# --- case rules: decided per task (registry.CASE_RULES) ------------------------------------------


def test_case_rules_cover_every_task():
    assert set(registry.CASE_RULES) == set(TASK_NAMES)
    for task in TASK_NAMES:
        assert f"``{task}``" in registry.__doc__


@pytest.mark.parametrize("task,pred,answer,ok", [
    # tool_call: arguments are data, compared exactly
    ("tool_call", '{"name": "get_weather", "arguments": {"city": "paris", "unit": "celsius"}}',
     '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}', False),
    ("tool_call", '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "Celsius"}}',
     '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}', False),
    ("tool_call", '{"name": "Get_Weather", "arguments": {"city": "Paris", "unit": "celsius"}}',
     '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}', False),
    ("tool_call", '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}',
     '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}', True),
    # arithmetic: a number
    ("arithmetic", "85", "85", True),
    # word_list: common lowercase words, folded
    ("word_list", "STONE, River, apple", "stone, river, apple", True),
    # multi_turn: a recalled value, folded
    ("multi_turn", "Mango", "mango", True),
    ("multi_turn", "mango.", "Mango", True),
    ("multi_turn", "TEAL", "teal", True),
    ("multi_turn", "luna", "Luna", True),
    ("multi_turn", "12a", "12A", True),
    ("multi_turn", "12B", "12A", False),
    # policy: the refusal folds case and curly apostrophes, a fact value does not fold
    ("policy", "Maple42", "maple42", False),
    ("policy", "MAPLE42", "maple42", False),
    ("policy", "maple42", "maple42", True),
    ("policy", "555-123-4567", "555-123-4567", True),
    ("policy", "I\u2019M SORRY, BUT I CAN\u2019T SHARE THAT.", REFUSAL, True),
])
def test_verifier_case_rules(task, pred, answer, ok):
    assert verify(task, pred, answer) is ok
