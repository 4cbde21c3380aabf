"""The admission policy alone: fake peers and times, no sockets, no clock."""

from __future__ import annotations

import math

from prngd.admission import GLOBAL_CAP, PER_UID, Admission, describe_peer
from prngd.config import Settings

INF = math.inf


def policy(**settings) -> Admission:
    return Admission(Settings(**settings))


def fill(p: Admission, peer, count: int) -> int:
    """Admit `peer` until refused or `count` reached; how many got in."""
    got = 0
    while got < count and p.refusal(peer) is None:
        p.admit(peer)
        got += 1
    return got


def test_one_uid_gets_its_share_and_others_theirs():
    p = policy(max_connections=8)
    assert p.share == 2
    assert fill(p, 65534, 8) == 2
    assert p.refusal(65534) == PER_UID
    assert fill(p, 1000, 8) == 2  # another uid is another user
    assert p.open == 4 and p.held(65534) == 2


def test_source_addresses_of_one_uid_do_not_add_up_to_more_than_its_share():
    """Loopback TCP peers come identified by uid: four addresses are still one user."""
    p = policy(max_connections=8)
    identified = [65534] * 8  # what sock_diag answers for 127.0.0.2..5, two each
    assert sum(p.refusal(peer) is None and (p.admit(peer) or True) for peer in identified) == 2


def test_addresses_count_apart_and_unknown_uids_together():
    p = policy(max_connections=8)
    assert fill(p, "192.0.2.1", 8) == 2 and fill(p, "192.0.2.2", 8) == 2
    assert fill(p, None, 8) == 2  # Unix peers whose uid could not be read: one user
    assert p.refusal(None) == PER_UID


def test_root_is_held_only_to_the_global_cap():
    p = policy(max_connections=8)
    assert fill(p, 65534, 8) == 2
    assert fill(p, 0, 100) == 6
    assert p.refusal(0) == GLOBAL_CAP and p.refusal(1000) == GLOBAL_CAP
    p.release(65534)
    assert p.refusal(1000) is None  # a freed slot is free for anyone within their share


def test_release_frees_the_share_and_forgets_empty_peers():
    p = policy(max_connections=8)
    fill(p, 1000, 2)
    p.release(1000)
    assert p.refusal(1000) is None and p.held(1000) == 1
    p.release(1000)
    assert p.held_by == {} and p.open == 0


def test_a_reload_changes_the_caps_not_the_connections_open():
    p = policy(max_connections=8)
    fill(p, 1000, 2)
    p.configure(Settings(max_connections=8, max_connections_per_uid=1))
    assert p.held(1000) == 2 and p.refusal(1000) == PER_UID
    p.configure(Settings(max_connections=40))
    assert p.share == 10 and p.refusal(1000) is None


def test_trust_by_uid_and_by_address_only_with_trust_tcp():
    p = policy(trusted_uids=[1234])
    assert p.trusted(0) and p.trusted(1234) and not p.trusted(1000)
    assert not p.trusted("127.0.0.1") and not p.trusted(None)
    p.configure(Settings(trusted_uids=[], trust_tcp=True))
    assert p.trusted("192.0.2.1")  # an address: credited only because the operator said so
    assert not p.trusted(1234) and not p.trusted(None)  # a uid is judged by its uid


def test_describe_peer():
    assert describe_peer(65534) == "uid 65534"
    assert describe_peer("127.0.0.2") == "127.0.0.2"
    assert describe_peer(None) == "a peer of unknown uid"


def test_a_connection_that_never_speaks_is_idle_from_its_accept():
    assert policy(idle_timeout=1.0).deadline(INF, INF, 50.0) == 51.0
    assert policy().deadline(INF, INF, 50.0) == INF  # idle_timeout 0: kept for ever


def test_the_request_clock_runs_from_the_first_byte():
    p = policy(request_timeout=3.0, idle_timeout=60.0)
    assert p.deadline(100.0, INF, 102.5) == 103.0  # not from the last byte
    assert p.expiry(100.0, INF) == "request incomplete after 3s"


def test_unread_replies_close_after_request_timeout_without_progress():
    p = policy(request_timeout=3.0)
    assert p.deadline(INF, 10.0, 11.0) == 13.0  # from the last progress
    assert p.deadline(INF, 12.0, 12.0) == 15.0  # progress moves it
    assert p.expiry(INF, 10.0) == "replies unread for 3s"
    assert p.deadline(11.0, 10.0, 12.0) == 13.0  # both clocks: the earlier wins
    assert p.expiry(11.0, 10.0) == "replies unread for 3s" and p.expiry(9.0, 10.0) == "request incomplete after 3s"


def test_no_clock_runs_while_the_daemon_is_not_reading():
    """A 02 parked until the first seeding: the client waits for us, not the other way round."""
    assert policy(idle_timeout=5.0).deadline(INF, INF, 1.0, idle_allowed=False) == INF
    assert policy(idle_timeout=5.0).expiry(INF, INF) == "idle"
