"""Forged AdmissionReviews against a whole cluster-mode regcred and the fake API server.

Any Pod can POST a review naming any namespace. The API server itself never sends one for a
namespace that does not exist (it refuses the Pod first) or for one labelled
``regcred.io/inject=disabled`` (the webhook configuration's namespaceSelector): such reviews are
forged, and must make regcred write nothing, repair nothing, and tell the caller no more than a
dry run in an existing namespace would.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.fakes.apiserver import FakeApiServer
from tests.support.kube import SECRET_NAME, Instance, eventually, pod_review, seed_cluster

OPTED_OUT = {"regcred.io/inject": "disabled"}


def _review(namespace: str, *, dry_run: bool = False, uid: str = "u") -> dict:
    review = pod_review(namespace, uid=uid)
    review["request"]["dryRun"] = dry_run
    return review


async def _answer(regcred: Instance, review: dict) -> dict:
    answer = await regcred.http.post("/mutate", json=review)
    assert answer.status_code == 200
    return answer.json()["response"]


def _results(regcred: Instance, result: str) -> float:
    return regcred.deps.metrics.registry.get_sample_value("regcred_admission_requests_total",
                                                          {"result": result}) or 0.0


@pytest.mark.parametrize("dry_run", [pytest.param(False, id="write"), pytest.param(True, id="dry-run")])
def test_a_namespace_the_api_server_does_not_have_gets_no_write_and_no_repair(dry_run):
    with FakeApiServer() as api:
        seed_cluster(api, ["team-a"])

        async def main():
            regcred = await Instance(api, identity="solo").start()
            ghosts = [await _answer(regcred, _review(f"ghost-{i}", dry_run=dry_run)) for i in range(5)]
            genuine_dry_run = await _answer(regcred, _review("team-a", dry_run=True))
            await asyncio.sleep(1.5)  # past the first repair's delay: nothing may be retried
            no_namespace = _results(regcred, "no_namespace")
            await regcred.stop()
            return ghosts, genuine_dry_run, no_namespace

        ghosts, genuine_dry_run, no_namespace = asyncio.run(main())
        # The caller cannot tell a missing namespace from an existing one answered in a dry run.
        assert all(ghost == genuine_dry_run for ghost in ghosts)
        assert no_namespace == 5
        for i in range(5):
            assert api.count(resource="secrets", namespace=f"ghost-{i}") == 0
            assert api.count(verb="get", resource="namespaces", name=f"ghost-{i}") == 1  # the one bounded read
        assert api.count(verb="create", resource="secrets") == 0


def test_an_opted_out_namespace_gets_no_secret_from_a_forged_review():
    with FakeApiServer() as api:
        seed_cluster(api, ["team-a"])
        api.add_namespace("quiet", OPTED_OUT)

        async def main():
            regcred = await Instance(api, identity="solo").start()
            await eventually(lambda: regcred.deps.namespaces.known_labels("quiet") is not None)
            answer = await _answer(regcred, _review("quiet"))
            await regcred.stop()
            return answer

        answer = asyncio.run(main())
        assert "patch" not in answer and "warnings" not in answer
        assert api.count(resource="secrets", namespace="quiet") == 0


def test_the_refresher_revokes_a_secret_once_its_namespace_opts_out():
    with FakeApiServer() as api:
        seed_cluster(api, ["team-a", "team-b"])

        async def main():
            regcred = await Instance(api, identity="solo").start()
            for team in ("team-a", "team-b"):
                assert "patch" in await _answer(regcred, _review(team))
            await eventually(lambda: regcred.leading, what="leadership")
            api.add_namespace("team-a", OPTED_OUT)

            def held() -> set[str]:
                return {s["metadata"]["namespace"] for s in api.objects("secrets")
                        if s["metadata"]["name"] == SECRET_NAME}

            await eventually(lambda: held() == {"team-b"}, timeout=10, what="the revocation")
            await asyncio.sleep(1.0)  # two more passes: it is not written back
            left = held()
            await regcred.stop()
            return left

        assert asyncio.run(main()) == {"team-b"}
