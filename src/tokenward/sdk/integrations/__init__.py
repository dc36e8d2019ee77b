"""Agent frameworks on tokenward's guard: LangChain, pydantic-ai, the OpenAI Agents SDK.

Each module imports its framework when imported, and names the extra to install when it is
missing: ``tokenward.sdk.integrations.langchain``, ``.pydantic_ai``, ``.openai_agents``.
"""
