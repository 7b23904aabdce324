"""``opsagent mcp``: the capabilities an assistant may call, as MCP tools, credential-free.

The MCP server knows the capabilities from their declarations (schemas only), validates a
call's input as the host would, and puts the request on the host's queue under a broker
user of its own; the host -- the credential holder -- runs it and answers.  Nothing
here reads a credential, and the process keeps none in its environment
(:mod:`opsagent.assistant.environment`).
"""
