"""The chart's life on a real API server: install, upgrade with a changed CRD, uninstall.

`helm install` runs without --wait (no kubelet runs the pods here); what matters is what the API
server holds afterwards: established CRDs carrying the keep policy, the release's objects, a CRD
change applied by `helm upgrade`, and after `helm uninstall` the CRDs and nothing else.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.helm import CHART, Helm, helm_binary, install

pytestmark = pytest.mark.cluster

CRDS = ["agentaccounts.agentaccounts.dev", "accountproviders.agentaccounts.dev",
        "clusteraccountproviders.agentaccounts.dev"]  # fmt: skip
PRINTER_COLUMN = """        - name: Chart-Upgrade-Test
          type: string
          priority: 1
          jsonPath: .spec.secretName
"""


@pytest.fixture(scope="module")
def helm(cluster: Any) -> Helm:
    return Helm(helm_binary(), cluster.kubeconfig)


@pytest.fixture
def release(helm: Helm, namespace: str) -> Iterator[str]:
    name = f"in-{uuid.uuid4().hex[:6]}"
    yield name
    helm.run("uninstall", name, "-n", namespace)


def crd(helm: Helm, name: str) -> dict[str, Any]:
    proc = helm.kubectl("get", "crd", name, "-o", "json")
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


def columns(helm: Helm) -> list[str]:
    version = crd(helm, CRDS[0])["spec"]["versions"][0]
    return [c["name"] for c in version["additionalPrinterColumns"]]


def labelled(helm: Helm, release: str) -> list[str]:
    """Every object of any listable kind, in any namespace, labelled as part of `release`."""
    kinds = helm.kubectl("api-resources", "--verbs=list", "-o", "name").stdout.split()
    kinds = [k for k in kinds if k not in ("events", "events.events.k8s.io")]
    proc = helm.kubectl(
        "get", ",".join(kinds), "-A", "-l", f"app.kubernetes.io/instance={release}", "-o", "name"
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def with_extra_printer_column(tmp_path: Path) -> Path:
    """A copy of the chart whose AgentAccount CRD has one more printer column."""
    chart = tmp_path / "agentaccounts"
    shutil.copytree(CHART, chart)
    path = chart / "files" / "crds" / "agentaccounts.dev_agentaccounts.yaml"
    text = path.read_text()
    anchor = "      additionalPrinterColumns:\n"
    assert anchor in text
    path.write_text(text.replace(anchor, anchor + PRINTER_COLUMN, 1))
    return chart


def test_install_upgrade_uninstall(helm: Helm, namespace: str, release: str, tmp_path: Path) -> None:
    provider = f"{release}-in-cluster"
    options = ["podDisruptionBudget.enabled=true", "networkPolicy.enabled=true",
               "providers.inCluster.enabled=true", f"providers.inCluster.name={provider}"]  # fmt: skip
    notes = install(helm, release, namespace, *(a for o in options for a in ("--set", o)))
    assert f'The ClusterAccountProvider "{provider}" (kubernetes) is ready to use.' in notes

    for name in CRDS:
        found = crd(helm, name)
        assert found["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert found["metadata"]["annotations"]["meta.helm.sh/release-name"] == release
        established = [c for c in found["status"]["conditions"] if c["type"] == "Established"]
        assert established and established[0]["status"] == "True", name
    objects = set(labelled(helm, release))
    fullname = f"{release}-agentaccounts"
    for expected in (
        f"deployment.apps/{fullname}", f"serviceaccount/{fullname}", f"service/{fullname}-metrics",
        f"poddisruptionbudget.policy/{fullname}", f"networkpolicy.networking.k8s.io/{fullname}",
        f"clusterrole.rbac.authorization.k8s.io/{fullname}-grantable",
        f"clusteraccountprovider.agentaccounts.dev/{provider}", f"service/{fullname}-webhook",
        f"clusterrole.rbac.authorization.k8s.io/{fullname}-requester",
        f"clusterrole.rbac.authorization.k8s.io/{fullname}-viewer",
        f"clusterrole.rbac.authorization.k8s.io/{fullname}-use-{provider}",
    ):  # fmt: skip
        assert expected in objects, f"{expected} missing from {sorted(objects)}"

    # A CRD change reaches the cluster through `helm upgrade` (Helm never upgrades a crds/ folder).
    assert "Chart-Upgrade-Test" not in columns(helm)
    changed = with_extra_printer_column(tmp_path)
    helm.ok("upgrade", release, str(changed), "-n", namespace, "--reuse-values")
    assert "Chart-Upgrade-Test" in columns(helm)
    helm.ok("upgrade", release, str(CHART), "-n", namespace, "--reuse-values")
    assert "Chart-Upgrade-Test" not in columns(helm), "upgrading back did not remove the column"

    helm.ok("uninstall", release, "-n", namespace)
    for name in CRDS:
        assert crd(helm, name)["metadata"]["name"] == name, "uninstall deleted a CRD"
    kept = {f"customresourcedefinition.apiextensions.k8s.io/{name}" for name in CRDS}
    assert set(labelled(helm, release)) == kept, "uninstall left objects behind"
    assert helm.run("status", release, "-n", namespace).returncode != 0


def test_first_install_skips_the_default_provider_until_the_crds_exist(helm: Helm) -> None:
    """Without the CRD served (helm's default capabilities), the provider is left out, not an error.

    (NOTES.txt then asks for one `helm upgrade`; helm renders NOTES only when installing into a
    cluster, and this session's cluster already serves the CRDs, so that text is not checked here.)
    """
    rendered = helm.template("first", "ops", "--set", "providers.inCluster.enabled=true")
    assert "ClusterAccountProvider" not in {o["kind"] for o in rendered}
    served = helm.template("first", "ops", "--set", "providers.inCluster.enabled=true",
                           "--api-versions", "agentaccounts.dev/v1alpha1/ClusterAccountProvider")  # fmt: skip
    assert "ClusterAccountProvider" in {o["kind"] for o in served}
