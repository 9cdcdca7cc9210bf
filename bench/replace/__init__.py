"""Domain benchmark: replace-node through hotswap against the bare ``ceph`` sequence it performs.

``python -m bench.replace [--node node3] [--repeats 3] [--quick] [--no-checks] [--reuse | --lab-dir DIR]
[-p NAME=VALUE ...]`` brings up its own lab (``lab.Lab`` in a new /tmp dir, or ``--lab-dir``; ``--reuse``
takes the one up in ``$HOTSWAP_LAB_DIR`` and leaves it up), its own redis-server and one ``hotswap
worker --concurrency 2``, then runs, ``--repeats`` times in turn (so drift on a shared machine hits
all alike), on the same lab and the same data:

1. **hotswap**: ``runbooks/replace-node.yaml`` as it is on disk, launched through the engine's Service
   (``-p cluster=lab -p node=NODE -p reason=bench`` plus ``-p``), every approval gate approved as soon
   as its ``approval_requested`` event arrives (blocking read of the run's event stream). Wall time:
   launch until the run's ``succeeded`` event.
2. **bare**: the same procedure as a plain script. It is derived from what the hotswap run of the same
   repetition actually ran, not from a list kept here, so it follows the runbook as it changes: every
   ``HOST$ COMMAND`` line of the step logs is a remote command; the ones that change something (see
   :func:`bench.replace.recording.is_read_only`: a read-only ``ceph`` subcommand, ``lab-osd status``, a
   ``rados bench`` probe are reads, anything else is a mutation) are replayed in order, verbatim, over
   the same SSH (paramiko, the lab's key, strict known_hosts, one connection per host), each expected
   to exit as it did in the hotswap run. Wherever hotswap parked for the cluster between two of those
   commands, the script instead runs its own wait: sleep the mgr stats lag (2 x mgr_stats_period + 1
   s, which a script must know too or it sees the state from before its change), then poll ``ceph pg
   stat`` and ``ceph osd stat`` every N s until every PG is active+clean and every OSD that is in is up,
   N being the longest interval hotswap parked for at that point. So: same throttle values, same ramp
   (the same ``osd crush reweight`` weights), same ids, same restores, same poll intervals.
   Not included: preflight and every other check (health, ok-to-stop, safe-to-destroy, osd tree checks
   of weight 0, ``pg ls-by-osd`` before destroying), the HTTP side (Alertmanager silence, DC notice and
   ticket, chat), the approval gate, locks, and the ride-out of a lost cluster.
3. **bare + checks** (skip with ``--no-checks``): the same, plus every read-only command hotswap ran
   outside its pure "not yet" polls (an invocation that changed nothing and parked), i.e. its preflight
   and the checks each step makes before acting, replayed in order.

Differences that remain: between two ramp steps hotswap goes on as soon as the cluster is *calm*
(misplaced <= max_misplaced, backfilling <= max_backfilling, every PG active), the bare script waits
until *clean*; the last wait of a drain or a refill is until clean in both. Bare runs each command once
where hotswap re-checks (e.g. ``osd dump`` before and after destroying).

After each contender the bench waits for HEALTH_OK with all PGs active+clean (``Lab.wait_settled``) and
checks the lab is as before the first run: OSD ids per CRUSH host, CRUSH weights, up/in, the whole mon
config database (throttle and initial weight put back), no flags; anything else fails the bench.

It prints the bare script, where the first hotswap run's time went step by step (seconds in the action,
parked, reads and their seconds, mutations), and a table per repetition and median: wall time of
hotswap, bare and bare + checks, the ratios (the median of the per-repetition ratios), and hotswap's
wall time split by what the run was doing, from its events: ``engine`` (nothing running and nothing
due: dispatch between a step's end and the next one's claim, the claim after a timer fired, launch),
``waiting`` (parked until its next look at the cluster), ``actions`` (an action running: its SSH
commands, HTTP calls and decisions) and ``gate`` (at the approval gate before the decision). Exit 1
when the median hotswap / bare ratio is above 1.2. ``--quick`` is one repetition of each.
"""
