"""A realistic decision log: three days at the demo site (configs/demo: its users, roles, organizations
and patients), written as the server agent writes it (decision events of :mod:`audit.events`, chained,
checkpoints signed with an Ed25519 key made by the agent's own :func:`server_agent.decisions.load_key`).

What happens in it: the agent starts twice; radiologists query and retrieve (C-MOVE, each image a
sub-operation, then a transfer summary); refdoc's wildcard query is post-filtered; the researcher is
refused (not identifiable) and once given a de-identified view (issue 16's obligation); erdoc opens
an opted-out patient by break-glass at night; nobody (no role) is refused again and again; someone
at 10.0.0.66 fails to log in six times in a minute; mfarad touches 60 patients in one night.

    python -m tests.audit.sample_log FOLDER     # FOLDER/decisions.jsonl, decision-log.key(.pub)
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

from audit.chain import ChainWriter
from audit.events import (
    Action,
    ApplicationEvent,
    AuthenticationEvent,
    AuthorizationEvent,
    Decision,
    DecisionEvent,
    Kind,
    PdpAnswer,
    Reason,
    TransferSummary,
    Who,
)
from server_agent.decisions import load_key

USERS = {
    "rad": Who(kind="user", sub="u-rad", username="rad", roles=("radiologist",), organization="hospital-a"),
    "mfarad": Who(kind="user", sub="u-mfarad", username="mfarad", roles=("radiologist",), organization="hospital-a"),
    "tech": Who(kind="user", sub="u-tech", username="tech", roles=("technologist",), organization="hospital-a"),
    "refdoc": Who(kind="user", sub="u-refdoc", username="refdoc", roles=("referring_physician",),
                  organization="clinic-b"),
    "researcher": Who(kind="user", sub="u-res", username="researcher", roles=("researcher",),
                      organization="university-c"),
    "erdoc": Who(kind="user", sub="u-erdoc", username="erdoc", roles=("emergency_physician",),
                 organization="hospital-a"),
    "nobody": Who(kind="user", sub="u-nobody", username="nobody", roles=(), organization="hospital-a"),
}
STUDY = {"PAT-DEMO": "1.2.826.0.1.3680043.10.1.1", "PAT-REF-1": "1.2.826.0.1.3680043.10.1.2",
         "PAT-CONSENT-ORG": "1.2.826.0.1.3680043.10.1.3", "PAT-OTHER": "1.2.826.0.1.3680043.10.1.4",
         "PAT-OPTOUT": "1.2.826.0.1.3680043.10.1.5"}
# A PDP's own reason code may be long: the report must show it whole.
LONG_REASON = "consent_refused_by_patient_directive_research_and_secondary_use_opt_out_2026"
START = dt.datetime(2026, 11, 30, 7, 0, tzinfo=dt.UTC)


class Site:
    """Collects events with times of their own (the records' ``time``), and writes them in time order,
    as the agent would have."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "decisions.jsonl"
        self.key = folder / "decision-log.key"
        self.writer = ChainWriter(self.path, load_key(self.key), checkpoint_interval=3600)
        self.associations = 0
        self.events: list[tuple[dt.datetime, int, DecisionEvent]] = []

    def write(self, when: dt.datetime, event: DecisionEvent) -> None:
        self.events.append((when, len(self.events), event))

    def close(self) -> None:
        for when, _, event in sorted(self.events, key=lambda item: item[:2]):
            self.writer.write({"time": when.isoformat(timespec="microseconds"), **event.record()})
        self.writer.close()

    def login(self, when: dt.datetime, user: str, workstation: str = "WS1", app: str = "FINDSCU") -> str:
        self.associations += 1
        association = f"srv-{self.associations}"
        self.write(when, AuthenticationEvent(
            association=association, decision=Decision.PERMIT, reason=Reason.AUTHENTICATED, user=USERS[user],
            peer=f"10.0.1.{11 if workstation == 'WS1' else 12}:40{self.associations % 100:02d}",
            calling_ae=f"{app}@{workstation}", called_ae="ORTHANC@GW1", pacs="ORTHANC", identity_type=5,
            workstation=workstation, latency_ms=3.1))
        return association

    def ask(self, when: dt.datetime, user: str, action: Action, patient: str, *, association: str,
            decision: Decision = Decision.PERMIT, reason: str = "permit", rule: str = "role:radiologist",
            workstation: str = "WS1", break_glass: bool = False, obligations: tuple[str, ...] = (),
            post_filter: bool = False, sub_operation_of: Action | None = None, sop: str = "") -> None:
        resource = {"level": "STUDY", "patient_id": patient, "study_instance_uid": STUDY.get(patient, "")}
        if sop:
            resource["sop_instance_uid"] = sop
        self.write(when, AuthorizationEvent(
            association=association, action=action, decision=decision, reason=Reason.PDP,
            pdp=PdpAnswer(reason=reason, rule_id=rule, policy_version="demo-2026-11-22", break_glass=break_glass,
                          obligations=obligations),
            message_id=1, user=USERS[user], calling_ae=f"APP@{workstation}", workstation=workstation,
            pacs="ORTHANC", resource=resource, post_filter=post_filter, sub_operation_of=sub_operation_of,
            move_destination="VIEWER1@WS1" if action is Action.C_MOVE else "", latency_ms=1.2))

    def move(self, when: dt.datetime, user: str, patient: str, images: int = 4, workstation: str = "WS1",
             break_glass: bool = False) -> None:
        association = self.login(when, user, workstation, app="MOVESCU")
        rule = "btg:emergency" if break_glass else "role:radiologist"
        self.ask(when, user, Action.C_MOVE, patient, association=association, workstation=workstation, rule=rule,
                 break_glass=break_glass)
        for n in range(images):
            self.ask(when + dt.timedelta(seconds=n + 1), user, Action.C_STORE, patient, association=association,
                     sub_operation_of=Action.C_MOVE, sop=f"{STUDY[patient]}.{n + 1}", workstation=workstation,
                     rule=rule, break_glass=break_glass)
        self.write(when + dt.timedelta(seconds=images + 1), TransferSummary(
            association=association, action=Action.C_MOVE, message_id=1, user=USERS[user], workstation=workstation,
            pacs="ORTHANC", resource={"patient_id": patient, "study_instance_uid": STUDY[patient]},
            move_destination="VIEWER1@WS1", sub_operations=images))


def _day(site: Site, day: dt.datetime) -> None:
    at = day.replace(hour=8, minute=5)
    for n, patient in enumerate(("PAT-DEMO", "PAT-REF-1", "PAT-OTHER")):
        association = site.login(at + dt.timedelta(minutes=20 * n), "rad")
        site.ask(at + dt.timedelta(minutes=20 * n, seconds=2), "rad", Action.C_FIND, patient, association=association)
    site.move(at + dt.timedelta(hours=1), "rad", "PAT-DEMO")
    association = site.login(day.replace(hour=10), "tech", workstation="WS2", app="STORESCU")
    site.ask(day.replace(hour=10, second=3), "tech", Action.C_STORE, "PAT-DEMO", association=association,
             rule="role:technologist", workstation="WS2", sop=f"{STUDY['PAT-DEMO']}.9")
    association = site.login(day.replace(hour=11), "refdoc", workstation="WS2")
    site.ask(day.replace(hour=11, second=1), "refdoc", Action.C_FIND, "*", association=association,
             rule="care:refdoc", workstation="WS2")
    for patient, allowed in (("PAT-REF-1", True), ("PAT-CONSENT-ORG", True), ("PAT-OTHER", False),
                             ("PAT-DEMO", False)):
        site.ask(day.replace(hour=11, second=2), "refdoc", Action.C_FIND, patient, association=association,
                 decision=Decision.PERMIT if allowed else Decision.DENY, reason="permit" if allowed else "not_in_care",
                 rule="care:refdoc", workstation="WS2", post_filter=True)
    association = site.login(day.replace(hour=14), "researcher")
    site.ask(day.replace(hour=14, second=1), "researcher", Action.C_FIND, "PAT-DEMO", association=association,
             decision=Decision.DENY, reason="not_identifiable", rule="role:researcher")
    site.ask(day.replace(hour=14, minute=5), "researcher", Action.C_FIND, "PAT-CONSENT-ORG",
             association=association, decision=Decision.DENY, reason=LONG_REASON, rule="consent:research")


def write_sample(folder: Path) -> Path:
    """The log, in ``folder``; returns its path."""
    site = Site(folder)
    start = {"listen": "0.0.0.0:2762", "site": "Hospital A (demo)"}
    site.write(START.replace(hour=6, minute=58), ApplicationEvent(kind=Kind.APPLICATION_START, name="GW1",
                                                                 detail=start))
    for n in range(3):
        _day(site, START + dt.timedelta(days=n))
    restart = START + dt.timedelta(days=2)  # a restart for maintenance, before the third day's work
    site.write(restart.replace(hour=6, minute=50), ApplicationEvent(kind=Kind.APPLICATION_STOP, name="GW1"))
    site.write(restart.replace(hour=6, minute=58), ApplicationEvent(kind=Kind.APPLICATION_START, name="GW1",
                                                                   detail=start))
    site.write(restart.replace(hour=21), ApplicationEvent(kind=Kind.APPLICATION_STOP, name="GW1"))
    night = START.replace(day=1, month=12, hour=2, minute=14)
    association = site.login(night, "erdoc", workstation="WS2")  # the emergency: an opted-out patient, at night
    site.ask(night + dt.timedelta(seconds=5), "erdoc", Action.C_FIND, "PAT-OPTOUT", association=association,
             decision=Decision.DENY, reason="consent_denied", rule="consent:opt-out", workstation="WS2")
    site.ask(night + dt.timedelta(seconds=40), "erdoc", Action.C_FIND, "PAT-OPTOUT", association=association,
             reason="break_glass", rule="btg:emergency", workstation="WS2", break_glass=True)
    site.move(night + dt.timedelta(minutes=1), "erdoc", "PAT-OPTOUT", images=3, workstation="WS2", break_glass=True)
    for n in range(60):  # mfarad, one night: sixty patients in forty minutes
        association = site.login(night + dt.timedelta(minutes=20, seconds=40 * n), "mfarad")
        site.ask(night + dt.timedelta(minutes=20, seconds=40 * n + 1), "mfarad", Action.C_FIND, f"PAT-{1000 + n}",
                 association=association)
    for n in range(7):  # no role: refused, again and again
        association = site.login(START + dt.timedelta(days=1, hours=9, seconds=20 * n), "nobody")
        site.ask(START + dt.timedelta(days=1, hours=9, seconds=20 * n + 1), "nobody", Action.C_FIND, "PAT-DEMO",
                 association=association, decision=Decision.DENY, reason="no_role", rule="default:deny")
    for n in range(6):  # someone guessing passwords from one address
        site.write(START + dt.timedelta(days=2, hours=6, seconds=9 * n), AuthenticationEvent(
            association=f"srv-x{n}", decision=Decision.DENY, reason=Reason.PASSWORD_REFUSED,
            detail="password grant refused: invalid_grant", peer=f"10.0.0.66:5{n:04d}", calling_ae="FINDSCU@WS9",
            called_ae="ORTHANC@GW1", identity_type=2))
    association = site.login(START + dt.timedelta(days=2, hours=8), "researcher")  # issue 16's view, ahead of it
    site.ask(START + dt.timedelta(days=2, hours=8, seconds=2), "researcher", Action.C_FIND, "PAT-DEMO",
             association=association, reason="permit", rule="research:STUDY-A", obligations=("de-identify",))
    site.close()
    return site.path


if __name__ == "__main__":
    print(write_sample(Path(sys.argv[1])))
