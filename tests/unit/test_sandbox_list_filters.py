"""Engine.sandbox_list over a real Store: every filter is in the query, so pages and `total` agree
with the same filter applied to all rows (issue 18: `deletedOnly` listed nothing, `total` was a page)."""
import itertools
import random

import pytest

from localsb.api import errors as E
from localsb.api.status import SANDBOX_LIVE
from localsb.engine.engine import Engine

STATUSES = ("creating", "idle", "running", "suspended", "terminated", "failed", "deleted", "stopping")
N = 360


@pytest.fixture(scope="module")
def listing(tmp_path_factory):
    """An engine (no repair, no mechanisms) whose store holds N sandboxes over 2 orgs, 3 names,
    2 snapshots, every status; and the rows as plain dicts, to filter in Python."""
    eng = Engine(str(tmp_path_factory.mktemp("state")), repair=False)
    rnd = random.Random(18)
    rows = []
    for i in range(N):
        row = {"id": f"sbx_{i:06d}", "org_id": rnd.choice(("org_a", "org_b")),
               "project_id": rnd.choice((None, "proj_1")), "name": rnd.choice((None, "web", "db")),
               "mode": rnd.choice(("interactive", "oneshot")), "status": STATUSES[i % len(STATUSES)],
               "snapshot_id": rnd.choice((None, "snp_1", "snp_2")), "spec": "{}",
               "created_at": 1000.0 + i, "updated_at": 1000.0 + i, "last_activity": 1000.0 + i,
               "executions": rnd.randrange(5)}
        eng.store.insert("sandboxes", row)
        rows.append(row)
    yield eng, rows
    eng.store.close()


def _expected(rows, org_id=None, name=None, status=None, snapshot_id=None, live=False, deleted_only=False,
              include_deleted=False):
    out = []
    for r in rows:
        if deleted_only and r["status"] != "deleted":
            continue
        if not deleted_only and not include_deleted and r["status"] == "deleted":
            continue
        if live and r["status"] not in SANDBOX_LIVE:
            continue
        if (org_id and r["org_id"] != org_id) or (name and r["name"] != name) or \
                (status and r["status"] != status) or (snapshot_id and r["snapshot_id"] != snapshot_id):
            continue
        out.append(r["id"])
    return list(reversed(out))     # default order: created, newest first


def _all_pages(eng, limit, **filters):
    ids, offset, totals = [], 0, set()
    while True:
        page = eng.sandbox_list(limit=limit, offset=offset, **filters)
        totals.add(page["total"])
        ids += [s["id"] for s in page["sandboxes"]]
        if len(page["sandboxes"]) < limit:
            return ids, totals
        offset += limit


FILTERS = [
    {}, {"deleted_only": True}, {"include_deleted": True}, {"live": True},
    {"snapshot_id": "snp_1"}, {"name": "web"}, {"status": "idle"}, {"status": "terminated"},
    {"org_id": "org_a", "live": True}, {"org_id": "org_b", "deleted_only": True, "name": "db"},
    {"snapshot_id": "snp_2", "include_deleted": True, "name": "web"},
    {"org_id": "org_a", "snapshot_id": "snp_1", "status": "running", "live": True},
    {"live": True, "status": "terminated"},      # nothing: terminated is not live
]


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()) or "none")
@pytest.mark.parametrize("limit", [1, 7, 50, 100])
def test_pages_and_total_match_the_filter_over_all_rows(listing, filters, limit):
    eng, rows = listing
    want = _expected(rows, **filters)
    if limit == 1 and len(want) > 60:
        want_first = want[:3]
        got = [eng.sandbox_list(limit=1, offset=k, **filters)["sandboxes"][0]["id"] for k in range(3)]
        assert got == want_first
        assert eng.sandbox_list(limit=1, offset=0, **filters)["total"] == len(want)
        return
    ids, totals = _all_pages(eng, limit, **filters)
    assert ids == want
    assert totals == {len(want)}


def test_deleted_only_lists_deleted_sandboxes(listing):
    eng, rows = listing
    page = eng.sandbox_list(deleted_only=True, limit=100)
    assert page["total"] == sum(r["status"] == "deleted" for r in rows) > 0
    assert {s["status"] for s in page["sandboxes"]} == {"deleted"}


def test_an_offset_past_the_end_is_an_empty_page_with_the_whole_total(listing):
    eng, rows = listing
    page = eng.sandbox_list(offset=10 ** 6, limit=100)
    assert page["sandboxes"] == [] and page["total"] == sum(r["status"] != "deleted" for r in rows)


def test_sorting_pages_over_another_column_stays_a_partition(listing):
    eng, rows = listing
    for sort, direction in itertools.product(("name", "status", "execution_count", "updated"), ("asc", "desc")):
        ids, totals = _all_pages(eng, 33, include_deleted=True, sort=sort, direction=direction)
        assert sorted(ids) == sorted(r["id"] for r in rows) and totals == {N}


@pytest.mark.parametrize("kwargs", [{"limit": 0}, {"limit": 101}, {"offset": -1}, {"limit": "x"},
                                    {"sort": "size"}, {"direction": "up"}])
def test_bad_paging_is_a_validation_error(listing, kwargs):
    eng, _ = listing
    with pytest.raises(E.ValidationError):
        eng.sandbox_list(**kwargs)
