"""What can go wrong for a client command, and the exit code that says so.

An agent's launcher branches on the exit code, not on the wording, so every failure it may want to
handle differently has its own code, fixed and documented (README "For agents", `--help`):

    ClientError            1  unexpected (a bug, an API error nothing below describes)
    ├── UsageError         2  the request as given cannot be made (bad flag, invalid per the schema,
    │                         name taken); argparse exits 2 for malformed command lines too
    ├── NoClusterAccess    3  no kubeconfig / credentials, API server unreachable, credentials refused
    ├── Refused            4  refused: RBAC (you may not do this), or the operator's admission webhook
    │                         (a policy or delegation rule, named in the message)
    ├── UnknownProvider    5  the provider named does not exist
    ├── AccountFailed      6  the AgentAccount was admitted but ended Failed (reason in the message)
    ├── TimedOut           7  not done within --timeout (e.g. waiting for approval)
    └── NotFound           8  no AgentAccount of that name
Every message is one line, and never contains a credential.
"""

from __future__ import annotations

from agentaccounts.kube import KubeApiError

WEBHOOK_DENIAL = "denied the request: "


class ClientError(Exception):
    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))  # one line, whatever the API server sent
        self.message = str(self)


class UsageError(ClientError):
    exit_code = 2


class NoClusterAccess(ClientError):
    exit_code = 3


class Refused(ClientError):
    exit_code = 4


class UnknownProvider(ClientError):
    exit_code = 5


class AccountFailed(ClientError):
    exit_code = 6


class TimedOut(ClientError):
    exit_code = 7


class NotFound(ClientError):
    exit_code = 8


EXIT_CODES = [
    (0, "done"),
    (ClientError.exit_code, "unexpected error"),
    (UsageError.exit_code, "usage: a bad flag, or a request the API server rejects as invalid or taken"),
    (NoClusterAccess.exit_code, "no cluster access: no kubeconfig, server unreachable, credentials refused"),
    (Refused.exit_code, "refused by RBAC or by a policy rule at admission (the message names the rule)"),
    (UnknownProvider.exit_code, "unknown provider"),
    (AccountFailed.exit_code, "the AgentAccount ended Failed (its reason and message are printed)"),
    (TimedOut.exit_code, "not done within --timeout (e.g. still awaiting approval)"),
    (NotFound.exit_code, "no AgentAccount of that name"),
]


def translated(exc: KubeApiError, doing: str) -> ClientError:
    """The ClientError for an API error while `doing` something (e.g. "create AgentAccount x")."""
    detail = exc.detail or str(exc)
    if exc.status == 0:  # kube.py: "<what>: no answer from the API server (<error type>)"
        why = str(exc).rsplit(" (", 1)[-1].rstrip(")") if " (" in str(exc) else "no answer"
        return NoClusterAccess(f"cannot reach the API server ({doing}): no answer ({why})")
    if exc.status == 401:
        return NoClusterAccess(f"the API server does not accept these credentials ({doing}): {detail}")
    if exc.status == 403:
        if WEBHOOK_DENIAL in detail:  # the operator's admission webhook: "<Reason>: rule <name>: ..."
            return Refused(f"refused by the operator's admission: {detail.split(WEBHOOK_DENIAL, 1)[1]}")
        return Refused(f"refused by RBAC ({doing}): {detail}")
    if exc.status in (400, 409, 422):
        return UsageError(f"the API server rejected this ({doing}): {detail}")
    return ClientError(f"{doing} failed: {detail}")
