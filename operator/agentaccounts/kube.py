"""The only module that uses the `kubernetes` client: a small async adapter over what we need.

The official client is synchronous; every call runs in a worker thread (`asyncio.to_thread`) so the
event loop kopf shares with the reconcilers never blocks on the network. Everything returns plain dicts
(`sanitize_for_serialization`), so the rest of the package never sees client model classes, and only
three outcomes of an API error matter above this line: 404 (None / success), 409 (`AlreadyExists` /
`Conflict`) and everything else (`KubeApiError`, retried by kopf with backoff).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from agentaccounts.ownership import MANAGED_BY, owned_by

GROUP, VERSION = "agentaccounts.dev", "v1alpha1"
PLURALS = {
    "AgentAccount": "agentaccounts",
    "AccountProvider": "accountproviders",
    "ClusterAccountProvider": "clusteraccountproviders",
}
DISCOVERY_TTL = 30.0  # seconds: new CRDs become grantable within this, without flooding discovery
# Every call has a deadline (connect, read), so a half-open pooled connection or a hung API server
# fails the call (KubeApiError, status 0: retried) instead of holding a revocation, a Lease renewal
# or the discovery lock until the process restarts. 30 s is well above any healthy API call.
REQUEST_TIMEOUT = (5.0, 30.0)


class KubeApiError(Exception):
    """An API call failed for a reason other than 404/409. `status` is the HTTP status (0: no answer);
    `detail` the API server's own message (its Status object's `message`, e.g. the admission webhook's
    refusal naming the rule), "" when there was none. Neither ever holds a request's content."""

    def __init__(self, message: str, status: int = 0, detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class KubeConfigError(Exception):
    """No usable credentials for the API server."""


class AlreadyExists(KubeApiError):
    """409 on create."""


class Conflict(KubeApiError):
    """409 on update (resourceVersion mismatch)."""


def _error(exc: ApiException, what: str) -> KubeApiError:
    reason = exc.reason or "error"
    detail = _status_message(exc.body)
    if exc.status == 409:
        kind = AlreadyExists if "AlreadyExists" in (exc.body or "") else Conflict
        return kind(f"{what}: {reason}", 409, detail)
    # The body is the API server's Status object: safe (no request echo), useful (the message).
    return KubeApiError(f"{what}: HTTP {exc.status} {reason}", exc.status or 0, detail)


def _status_message(body: Any) -> str:
    """The `message` of a Status response body; "" for anything else."""
    try:
        status = json.loads(body) if isinstance(body, str | bytes) else None
    except ValueError:
        return ""
    message = status.get("message") if isinstance(status, dict) else None
    return str(message) if isinstance(message, str) else ""


@dataclass(frozen=True)
class _Kind:
    api: str  # attribute of the client module
    noun: str  # the client's method suffix


_KINDS = {
    "ServiceAccount": _Kind("CoreV1Api", "namespaced_service_account"),
    "Secret": _Kind("CoreV1Api", "namespaced_secret"),
    "ConfigMap": _Kind("CoreV1Api", "namespaced_config_map"),
    "Role": _Kind("RbacAuthorizationV1Api", "namespaced_role"),
    "RoleBinding": _Kind("RbacAuthorizationV1Api", "namespaced_role_binding"),
    "Lease": _Kind("CoordinationV1Api", "namespaced_lease"),
}


class Kube:
    """Async access to the API server for one set of credentials."""

    def __init__(
        self, api_client: client.ApiClient, request_timeout: tuple[float, float] = REQUEST_TIMEOUT
    ) -> None:
        self.api_client = api_client
        self.request_timeout = request_timeout
        self._last_answer = time.monotonic()  # when the API server last answered anything (liveness)
        self._discovery: tuple[float, dict[str, set[str]]] | None = None
        self._discovery_lock = asyncio.Lock()

    @classmethod
    def connect(cls, kubeconfig: str | None = None, pool_size: int = 64) -> Kube:
        """From a kubeconfig file (or $KUBECONFIG / ~/.kube/config), else in-cluster credentials.

        `pool_size` keep-alive connections: the client's default (5 per CPU) is smaller than the
        worker-thread pool, and every call beyond it opens and drops a fresh TLS connection, which is
        what a burst of expiries would otherwise spend its CPU on."""
        configuration = client.Configuration()
        try:
            config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        except config.ConfigException as exc:
            if kubeconfig:
                raise KubeConfigError(f"cannot use kubeconfig {kubeconfig}: {exc}") from None
            try:
                config.load_incluster_config(client_configuration=configuration)
            except config.ConfigException:
                raise KubeConfigError(
                    "no cluster credentials: set KUBECONFIG or --kubeconfig, or run inside a pod"
                ) from None
        configuration.connection_pool_maxsize = pool_size
        return cls(client.ApiClient(configuration))

    @classmethod
    def from_kubeconfig_dict(cls, kubeconfig: dict[str, Any]) -> Kube:
        """A client that authenticates exactly as a generated kubeconfig says (the demo's agent)."""
        return cls(config.new_client_from_config_dict(kubeconfig))

    def close(self) -> None:
        self.api_client.close()

    def seconds_since_answer(self) -> float:
        return time.monotonic() - self._last_answer

    async def ping(self) -> None:
        """GET /version: KubeApiError (status 0) when the API server does not answer in time."""
        await self._call("GET /version", client.VersionApi(self.api_client).get_code)

    @property
    def server(self) -> str:
        return str(self.api_client.configuration.host)

    def ca_pem(self) -> str:
        """The CA bundle this client trusts (as PEM), for kubeconfigs pointing at the same server."""
        path = self.api_client.configuration.ssl_ca_cert
        if not path:
            return ""
        with open(path, encoding="ascii") as handle:
            return handle.read()

    async def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        # _preload_content=False: take the JSON as it came. Building the client's model objects and
        # turning them back into dicts costs ~1 ms of CPU per call, which adds up in bursts.
        kwargs.setdefault("_request_timeout", self.request_timeout)
        try:
            response = await asyncio.to_thread(fn, *args, _preload_content=False, **kwargs)
            self._last_answer = time.monotonic()
        except ApiException as exc:
            self._last_answer = time.monotonic()  # an error status is an answer: the server is there
            if exc.status == 404:
                return None
            raise _error(exc, what) from None  # the client's exception repr includes request headers
        except (urllib3.exceptions.HTTPError, OSError) as exc:  # timeout, refused, reset: no answer
            raise KubeApiError(f"{what}: no answer from the API server ({type(exc).__name__})", 0) from None
        return json.loads(response.data) if response.data else {}

    async def _obj(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        """`_call` for calls that return one object (None for 404)."""
        return cast("dict[str, Any] | None", await self._call(what, fn, *args, **kwargs))

    def _method(self, verb: str, kind: str) -> Any:
        spec = _KINDS[kind]
        return getattr(getattr(client, spec.api)(self.api_client), f"{verb}_{spec.noun}")

    # -- built-in objects -----------------------------------------------------------------------
    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._obj(f"get {kind} {namespace}/{name}", self._method("read", kind), name, namespace)

    async def list_objects(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        """Objects of `kind` matching `selector` in `namespace` ("" = every namespace)."""
        args: tuple[str, ...] = (namespace,)
        if namespace:
            fn, where = self._method("list", kind), namespace
        else:
            spec = _KINDS[kind]
            api = getattr(client, spec.api)(self.api_client)
            noun = spec.noun.removeprefix("namespaced_")
            fn, args, where = getattr(api, f"list_{noun}_for_all_namespaces"), (), "all namespaces"
        result = await self._call(f"list {kind} in {where}", fn, *args, label_selector=selector)
        return list((result or {}).get("items", []))

    async def create(self, kind: str, namespace: str, body: dict[str, Any]) -> dict[str, Any] | None:
        name = body["metadata"]["name"]
        return await self._obj(
            f"create {kind} {namespace}/{name}", self._method("create", kind), namespace, body
        )

    async def replace(self, kind: str, namespace: str, body: dict[str, Any]) -> dict[str, Any] | None:
        name = body["metadata"]["name"]
        return await self._obj(
            f"replace {kind} {namespace}/{name}",
            self._method("replace", kind),
            name,
            namespace,
            body,
        )

    async def delete(self, kind: str, namespace: str, name: str, uid: str | None = None) -> bool:
        """Delete; True if it existed. With `uid`, only that incarnation (a precondition)."""
        options = client.V1DeleteOptions(
            preconditions=client.V1Preconditions(uid=uid) if uid else None, propagation_policy="Background"
        )
        try:
            result = await self._call(
                f"delete {kind} {namespace}/{name}",
                self._method("delete", kind),
                name,
                namespace,
                body=options,
            )
        except Conflict:  # precondition failed: a newer object with that name is not ours to delete
            return False
        return result is not None

    async def delete_owned(self, kind: str, namespace: str, name: str, uid: str) -> bool:
        """Delete `name` if it carries AgentAccount `uid`'s label, that incarnation only (its own uid
        is the precondition). True if it was ours and is gone; False if absent or not ours."""
        obj = await self.get(kind, namespace, name)
        if obj is None or not owned_by(obj, uid):
            return False
        await self.delete(kind, namespace, name, uid=obj["metadata"]["uid"])
        return True

    async def delete_labelled(self, kind: str, namespace: str, selector: str) -> None:
        """Delete every `kind` in `namespace` matching `selector`, in one call (deletecollection)."""
        await self._call(
            f"delete {kind} in {namespace} ({selector})",
            self._method("delete_collection", kind),
            namespace,
            label_selector=selector,
            propagation_policy="Background",
        )

    async def request_token(
        self, namespace: str, service_account: str, seconds: int, bound_secret: tuple[str, str] | None = None
    ) -> tuple[str, str]:
        """TokenRequest API: (token, expirationTimestamp). Bound to a Secret, if given, as well."""
        bound = None
        if bound_secret:
            bound = client.V1BoundObjectReference(
                api_version="v1", kind="Secret", name=bound_secret[0], uid=bound_secret[1]
            )
        body = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=seconds, bound_object_ref=bound)
        )
        core = client.CoreV1Api(self.api_client)
        result = await self._call(
            f"create token for {namespace}/{service_account}",
            core.create_namespaced_service_account_token,
            service_account,
            namespace,
            body,
        )
        if result is None:
            raise KubeApiError(f"ServiceAccount {namespace}/{service_account} vanished", 404)
        return result["status"]["token"], result["status"]["expirationTimestamp"]

    # -- our custom resources -------------------------------------------------------------------
    def _custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api_client)

    async def get_custom(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        api, plural = self._custom(), PLURALS[kind]
        if namespace:
            return await self._obj(
                f"get {kind} {namespace}/{name}",
                api.get_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                plural,
                name,
            )
        return await self._obj(
            f"get {kind} {name}", api.get_cluster_custom_object, GROUP, VERSION, plural, name
        )

    async def create_custom(
        self, kind: str, namespace: str, body: dict[str, Any], dry_run: bool = False
    ) -> dict[str, Any] | None:
        api, plural = self._custom(), PLURALS[kind]
        name = body["metadata"].get("name") or body["metadata"].get("generateName", "")
        if namespace:
            return await self._obj(
                f"create {kind} {namespace}/{name}",
                api.create_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                plural,
                body,
                **({"dry_run": "All"} if dry_run else {}),
            )
        return await self._obj(
            f"create {kind} {name}", api.create_cluster_custom_object, GROUP, VERSION, plural, body
        )

    async def create_namespace(self, name: str) -> None:
        core = client.CoreV1Api(self.api_client)
        with contextlib.suppress(AlreadyExists):
            await self._call(f"create namespace {name}", core.create_namespace, {"metadata": {"name": name}})

    async def delete_namespace(self, name: str) -> None:
        core = client.CoreV1Api(self.api_client)
        await self._call(f"delete namespace {name}", core.delete_namespace, name)

    async def events(self, namespace: str, kind: str, name: str) -> list[dict[str, Any]]:
        core = client.CoreV1Api(self.api_client)
        selector = f"involvedObject.kind={kind},involvedObject.name={name}"
        result = await self._call(
            f"list events in {namespace}", core.list_namespaced_event, namespace, field_selector=selector
        )
        return list((result or {}).get("items", []))

    async def list_custom(self, kind: str, namespace: str = "") -> list[dict[str, Any]]:
        """All objects of one of our kinds: in `namespace`, or cluster-wide when it is empty."""
        api, plural = self._custom(), PLURALS[kind]
        if namespace:
            result = await self._call(
                f"list {kind} in {namespace}",
                api.list_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                plural,
            )
        else:
            result = await self._call(f"list {kind}", api.list_cluster_custom_object, GROUP, VERSION, plural)
        return list((result or {}).get("items", []))

    async def patch_status(self, kind: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        """JSON merge patch of the status subresource of one of our objects."""
        api, plural = self._custom(), PLURALS[kind]
        body = {"status": status}
        if namespace:
            await self._call(
                f"patch status of {kind} {namespace}/{name}",
                api.patch_namespaced_custom_object_status,
                GROUP,
                VERSION,
                namespace,
                plural,
                name,
                body,
            )
        else:
            await self._call(
                f"patch status of {kind} {name}",
                api.patch_cluster_custom_object_status,
                GROUP,
                VERSION,
                plural,
                name,
                body,
            )

    async def patch_account_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """JSON merge patch of an AgentAccount's status (None values remove fields)."""
        await self.patch_status("AgentAccount", namespace, name, status)

    async def annotate_account(self, namespace: str, name: str, annotations: dict[str, str | None]) -> None:
        """JSON merge patch of an AgentAccount's annotations (None removes a key)."""
        await self._call(
            f"annotate AgentAccount {namespace}/{name}",
            self._custom().patch_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            "agentaccounts",
            name,
            {"metadata": {"annotations": annotations}},
        )

    async def patch_account(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any] | None:
        """JSON merge patch of an AgentAccount (e.g. {"spec": {"lifetime": "2h"}}); the stored object,
        or None when there is none. Admission judges it as the caller (the CLI's `extend`/`revoke`)."""
        return await self._obj(
            f"patch AgentAccount {namespace}/{name}",
            self._custom().patch_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            "agentaccounts",
            name,
            patch,
        )

    async def delete_account(self, namespace: str, name: str, uid: str) -> None:
        api = self._custom()
        options = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid))
        # A 409 means a newer AgentAccount with the same name: not the one whose record expired.
        with contextlib.suppress(Conflict):
            await self._call(
                f"delete AgentAccount {namespace}/{name}",
                api.delete_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                "agentaccounts",
                name,
                body=options,
            )

    async def read_secret_key(self, namespace: str, name: str, key: str) -> str | None:
        secret = await self.get("Secret", namespace, name)
        value = ((secret or {}).get("data") or {}).get(key)
        return base64.b64decode(value).decode() if value else None

    async def subject_access_review(
        self, user: dict[str, Any], attributes: dict[str, str]
    ) -> tuple[bool, str]:
        """Would `user` ({username, uid, groups, extra}) be allowed `attributes` (namespace, verb,
        group, resource, subresource, name)? Asked of the API server's own authorizer chain; groups and
        extra are passed verbatim (a SubjectAccessReview adds nothing on its own). (allowed, reason)."""
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": user.get("username", ""),
                "uid": user.get("uid") or None,
                "groups": list(user.get("groups") or []),
                "extra": dict(user.get("extra") or {}),
                "resourceAttributes": {"version": "*", **attributes},
            },
        }
        api = client.AuthorizationV1Api(self.api_client)
        result = await self._call("create SubjectAccessReview", api.create_subject_access_review, body)
        status = (result or {}).get("status") or {}
        if status.get("evaluationError") and not status.get("allowed"):
            raise KubeApiError(f"SubjectAccessReview: {status['evaluationError']}", 500)
        return bool(status.get("allowed")), str(status.get("reason") or "")

    async def namespace_labels(self, name: str) -> dict[str, str] | None:
        core = client.CoreV1Api(self.api_client)
        result = await self._obj(f"get namespace {name}", core.read_namespace, name)
        return None if result is None else dict((result.get("metadata") or {}).get("labels") or {})

    async def ensure_secret_key(
        self, namespace: str, name: str, key: str, make: Callable[[], bytes]
    ) -> bytes:
        """The value of `key` in Secret namespace/name, creating the Secret with `make()` if absent.
        Two operators starting at once both try to create; the loser reads the winner's value."""
        existing = await self.get("Secret", namespace, name)
        if existing is None:
            body = {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "labels": dict(MANAGED_BY),
                },
                "data": {key: base64.b64encode(make()).decode()},
            }
            with contextlib.suppress(AlreadyExists):
                await self.create("Secret", namespace, body)
            existing = await self.get("Secret", namespace, name)
        value = ((existing or {}).get("data") or {}).get(key)
        if not value:
            raise KubeApiError(f"Secret {namespace}/{name} has no key {key!r}", 500)
        return base64.b64decode(value)

    # -- discovery ------------------------------------------------------------------------------
    async def served_resources(self) -> dict[str, set[str]]:
        """{api group ("" = core): {plural resource names, including subresources like pods/log}}."""
        async with self._discovery_lock:
            if self._discovery and time.monotonic() - self._discovery[0] < DISCOVERY_TTL:
                return self._discovery[1]
            try:
                served = await asyncio.to_thread(self._discover)
            except ApiException as exc:
                raise _error(exc, "API discovery") from None
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise KubeApiError(
                    f"API discovery: no answer from the API server ({type(exc).__name__})", 0
                ) from None
            self._discovery = (time.monotonic(), served)
            return served

    def _discover(self) -> dict[str, set[str]]:
        timeout = self.request_timeout
        core = client.CoreV1Api(self.api_client).get_api_resources(_request_timeout=timeout)
        served: dict[str, set[str]] = {"": {r.name for r in core.resources}}
        custom = client.CustomObjectsApi(self.api_client)
        for group in client.ApisApi(self.api_client).get_api_versions(_request_timeout=timeout).groups:
            names: set[str] = set()
            for version in group.versions:
                try:
                    found = custom.get_api_resources(group.name, version.version, _request_timeout=timeout)
                except ApiException:  # an unavailable aggregated API must not hide the others
                    continue
                names |= {r.name for r in found.resources}
            served[group.name] = names
        return served


class LeaseStore:
    """leader.LeaseStore over coordination.k8s.io/v1 Leases."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.kube.get("Lease", namespace, name)

    async def create(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        from agentaccounts import leader

        try:
            return await self.kube.create("Lease", namespace, body) or {}
        except KubeApiError as exc:
            if exc.status == 409:
                raise leader.Conflict(str(exc)) from None
            raise

    async def replace(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        from agentaccounts import leader

        try:
            return await self.kube.replace("Lease", namespace, body) or {}
        except KubeApiError as exc:
            if exc.status == 409:
                raise leader.Conflict(str(exc)) from None
            raise


def context_namespace(kubeconfig: str | None = None) -> str | None:
    """The namespace a client should default to, as kubectl does: the current context's, else (in a
    pod) the pod's own; None when neither says."""
    try:
        _, active = config.list_kube_config_contexts(config_file=kubeconfig)
        namespace = ((active or {}).get("context") or {}).get("namespace")
        if namespace:
            return str(namespace)
    except (config.ConfigException, OSError, ValueError):
        pass
    try:
        with open(_POD_NAMESPACE, encoding="utf-8") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


_POD_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def connection_info(kube: Kube) -> dict[str, Any]:
    """The credentials of `kube`, in the shape kopf.ConnectionInfo takes, so kopf and we act as one."""
    cfg = kube.api_client.configuration
    if cfg.refresh_api_key_hook is not None:  # in-cluster: re-read the rotated projected token
        cfg.refresh_api_key_hook(cfg)
    token = (cfg.api_key or {}).get("authorization") or (cfg.api_key or {}).get("BearerToken")
    scheme = None
    if token and " " in token:
        scheme, token = token.split(" ", 1)
    return {
        "server": cfg.host,
        "ca_path": cfg.ssl_ca_cert,
        "insecure": not cfg.verify_ssl,
        "scheme": scheme,
        "token": token,
        "certificate_path": cfg.cert_file,
        "private_key_path": cfg.key_file,
    }
