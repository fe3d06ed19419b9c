"""The client side: how an agent (or the person launching it) asks for its own account.

    errors.py      what can go wrong, each with its own exit code (the table in `--help` and README)
    scopes.py      the `--scope 'get,list:configmaps'` syntax and the AgentAccount manifest (pure)
    views.py       what a caller is shown: an account's summary, env lines, a private kubeconfig file
    accounts.py    create / wait / read / list / extend / revoke / approve, over kube.Kube
    commands.py    the CLI subcommands on top of accounts.py
    mcp_server.py  the same as MCP tools (`agentaccounts mcp`)

Everything here acts with the caller's own Kubernetes identity and nothing else: the operator's
admission webhook stamps whoever creates the AgentAccount as its requester and checks their RBAC, so
a request made through the CLI or MCP is held to exactly the checks of a `kubectl apply`. Nothing
here imports kopf (only handlers.py does) or the kubernetes client (only kube.py does).
"""
