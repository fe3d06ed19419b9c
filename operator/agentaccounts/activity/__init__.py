"""What an agent did: its requests, attributed to one AgentAccount and one issue of it.

    attribution.py  pure: an API-server audit event -> (credential id, username, Entry); the index
                    credential id -> account (by the token's jti, checked against the username)
    trail.py        pure: status.activity (summary + a bounded recent trail), merged from entries
    stream.py       the operator's audit stream: one JSON line per agent request and per decision
    collector.py    attributes events and writes status.activity in batches (leader only)
    receiver.py     the HTTPS endpoint the API server's audit webhook backend posts to (mutual TLS)

Nothing here ever holds a credential: the jti is the token's id, not the token.
"""
