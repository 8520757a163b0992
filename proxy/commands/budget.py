"""`pgshroud budget show | grant | reset`: the administrator's view of the privacy budget ledger.

`show` prints, per user, what is spent, granted and left of the user's own
budget in the current period (since the user's last reset, within
budgets.period's window), how much the user can spend now (the least left of
the user's, the role's and the dataset's budgets, as a charge checks them),
the number of charges and the last one; then a bar of each user's spend and
the shared role and dataset budgets. The figures come from the same ledger
code a charge uses (PostgresLedger.standing), so they are what the next
charge will see.

`grant` and `reset` append a 'grant' or 'reset' row to pgshroud.budget_ledger
through PostgresLedger.grant/reset; nothing is ever changed in place. The
row's note records who ran the command (the operating system user and host)
and the --note given; with --audit-log the action is also appended to that
JSON lines file, as `pgshroud serve --audit-log` writes decisions.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import TextIO

from pgshroud.policies.accounting import Standing, budgets_for, exact, period_window, show_number
from pgshroud.policies.loader import load_policy
from pgshroud.policies.model import Policy
from pgshroud.proxy.budget.ledger import PostgresLedger
from pgshroud.proxy.budget.protocol import Activity
from pgshroud.proxy.ops.catalog import own_conninfo
from pgshroud.proxy.ops.config import ConfigError, UpstreamTarget

BAR_WIDTH = 20


@dataclass(frozen=True)
class UserRow:
    user: str
    role: str | None
    own: Standing | None  # the per-user budget, when the policy has one
    now: Decimal | None  # the least epsilon left over the user's budgets; None: no budget applies
    activity: Activity


def parse_amount(text: str, what: str, *, below_one: bool = False) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ConfigError(f"{what} must be a number, not {text!r}") from None
    if not value.is_finite() or value < 0:
        raise ConfigError(f"{what} must be a finite number >= 0, not {text}")
    if below_one and value >= 1:
        raise ConfigError(f"{what} must be below 1, not {text}")
    return value


def scope_of(user: str | None, role: str | None, dataset: bool, command: str) -> tuple[str, str]:
    chosen = [s for s in (user is not None, role is not None, dataset) if s]
    if len(chosen) != 1:
        raise ConfigError(f"budget {command} needs exactly one of a USER, --role ROLE or --dataset")
    if user is not None:
        if not user:
            raise ConfigError("the user name is empty")
        return "user", user
    if role is not None:
        if not role:
            raise ConfigError("the role name is empty")
        return "role", role
    return "dataset", ""


def run_budget(args: argparse.Namespace, out: TextIO) -> int:
    policy = load_policy(args.policy)
    conninfo = own_conninfo(UpstreamTarget.parse(args.upstream), policy)
    if args.budget_command == "show":
        return asyncio.run(_show(conninfo, policy, args.policy, args.user, out))
    if args.budget_command == "grant":
        scope, name = scope_of(args.user, args.role, args.dataset, "grant")
        epsilon = parse_amount(args.epsilon, "--epsilon")
        delta = parse_amount(args.delta, "--delta", below_one=True)
        if epsilon == 0 and delta == 0:
            raise ConfigError("a grant of epsilon 0 and delta 0 changes nothing")
        _check_capped(policy, scope, name, "grant")
        return asyncio.run(_adjust(conninfo, policy, "grant", scope, name, args, out, epsilon, delta))
    scope, name = scope_of(args.user, args.role, args.dataset, "reset")
    _check_capped(policy, scope, name, "reset")
    return asyncio.run(_adjust(conninfo, policy, "reset", scope, name, args, out))


def _check_capped(policy: Policy, scope: str, name: str, command: str) -> None:
    """A grant or reset of a scope the policy does not cap would change nothing; say so instead."""
    caps = policy.budgets
    if scope == "user":
        if caps.per_user is None:
            raise ConfigError(f"the policy has no budgets.per_user, so a {command} of user {name!r} would change "
                              "nothing: grant or reset the user's role (--role) or the dataset (--dataset)")
        role = policy.role_for(name)
        if role is None:
            raise ConfigError(f"user {name!r} has no role in the policy (and there is no default role), so no "
                              "private answer is ever charged to them")
        if role.share_answers:
            raise ConfigError(f"user {name!r} is in role {role.name!r}, whose users share its answers and its "
                              f"budget (roles.{role.name}.share_answers), so a {command} of the user would change "
                              f"nothing: {command} the role (--role {role.name})")
    elif scope == "role":
        if name not in policy.roles:
            raise ConfigError(f"--role {name}: the policy has no such role (it has {', '.join(policy.roles)})")
        if name not in caps.per_role:
            raise ConfigError(f"the policy has no budgets.per_role.{name}, so a {command} of role {name!r} would "
                              "change nothing")
    elif caps.per_dataset is None:
        raise ConfigError(f"the policy has no budgets.per_dataset, so a {command} of the dataset would change nothing")


def _who(note: str | None) -> str:
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry
        user = "unknown"
    text = f"by {user}@{socket.gethostname()}"
    return f"{text}: {note}" if note else text


def _describe(scope: str, name: str) -> str:
    return {"user": f"user {name}", "role": f"role {name}", "dataset": "the dataset"}[scope]


async def _adjust(conninfo: str, policy: Policy, action: str, scope: str, name: str, args: argparse.Namespace,
                  out: TextIO, epsilon: Decimal = Decimal(0), delta: Decimal = Decimal(0)) -> int:
    ledger = PostgresLedger(conninfo, policy)
    note = _who(args.note)
    try:
        await ledger.check()
        before = await ledger.scope_standing(scope, name)
        if action == "grant":
            entry = await ledger.grant(scope, name, epsilon, delta, note=f"pgshroud budget grant {note}")
        else:
            entry = await ledger.reset(scope, name, note=f"pgshroud budget reset {note}")
        after = await ledger.scope_standing(scope, name)
    finally:
        await ledger.close()
    what = f"granted epsilon {show_number(epsilon)} and delta {show_number(delta)} to" if action == "grant" \
        else "reset"
    print(f"{what} {_describe(scope, name)} (ledger entry {entry}, {note})", file=out)
    for label, standing in (("before", before), ("after", after)):
        if standing is not None:
            print(f"  {label}: {_standing_text(standing)}", file=out)
    if args.audit_log:
        _append_audit(args.audit_log, action, scope, name, entry, epsilon, delta, note)
    return 0


def _standing_text(s: Standing) -> str:
    return (f"epsilon spent {show_number(s.spent_epsilon)} of {show_number(s.allowed_epsilon)} "
            f"({show_number(s.budget.epsilon)} + {show_number(s.granted_epsilon)} granted), "
            f"{show_number(s.remaining_epsilon)} left; delta spent {show_number(s.spent_delta)} of "
            f"{show_number(s.allowed_delta)}, {show_number(s.remaining_delta)} left")


def _append_audit(path: str, action: str, scope: str, name: str, entry: int, epsilon: Decimal, delta: Decimal,
                  note: str) -> None:
    record: dict[str, object] = {
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(time.time() * 1000) % 1000:03d}Z",
        "event": f"budget_{action}", "scope": scope, "name": name if scope != "dataset" else None,
        "ledger_entry": entry, "note": note,
    }
    if action == "grant":
        record["epsilon"] = float(epsilon)
        record["delta"] = float(delta)
    try:
        with open(path, "a", encoding="utf-8") as file:
            file.write(json.dumps(record, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise ConfigError(f"the {action} is in the ledger (entry {entry}), but --audit-log {path} could not be "
                          f"written: {exc.strerror or exc}") from None


async def _show(conninfo: str, policy: Policy, policy_path: str, user: str | None, out: TextIO) -> int:
    ledger = PostgresLedger(conninfo, policy)
    try:
        await ledger.check()
        activity = await ledger.activity([user] if user is not None else None)
        names = sorted(activity) if user is None else [user]
        rows = []
        for name in names:
            role_name, _ = budgets_for(policy, name)
            standings = await ledger.standing(name)
            own = next((s for s in standings if s.budget.scope == "user"), None)
            now = min((s.remaining_epsilon for s in standings), default=None)
            rows.append(UserRow(name, role_name, own, now, activity[name]))
        shared = []
        for role_name in sorted(policy.budgets.per_role):
            shared.append(await ledger.scope_standing("role", role_name))
        if policy.budgets.per_dataset is not None:
            shared.append(await ledger.scope_standing("dataset", ""))
        accounts = {name: await ledger.shared_activity(name) for name in sorted(policy.budgets.per_role)
                    if name in policy.roles and policy.roles[name].share_answers}
    finally:
        await ledger.close()
    _print_show(policy, policy_path, rows, [s for s in shared if s is not None], out, accounts)
    return 0


def _print_show(policy: Policy, policy_path: str, rows: list[UserRow], shared: list[Standing], out: TextIO,
                accounts: dict[str, Activity] | None = None) -> None:
    caps = policy.budgets
    window = period_window(caps.period)
    period = "since each budget's last reset" if window is None else \
        f"within the last {caps.period} (budgets.period), since each budget's last reset"
    cap_text = (f"per user: epsilon {show_number(exact(caps.per_user.epsilon, 'epsilon'))}, delta "
                f"{show_number(exact(caps.per_user.delta, 'delta'))}" if caps.per_user is not None
                else "no per-user cap")
    print(f"privacy budgets under {policy_path} ({cap_text}); spending counted {period}", file=out)
    print(file=out)
    if not rows:
        print("no user has been charged, granted or reset yet", file=out)
    else:
        header = ["user", "role", "eps spent", "eps granted", "eps left", "delta spent", "delta granted",
                  "delta left", "can spend now", "charges", "last charge (UTC)"]
        table = [header]
        for row in rows:
            own = row.own
            spent_eps = own.spent_epsilon if own is not None else row.activity.spent_epsilon
            spent_delta = own.spent_delta if own is not None else row.activity.spent_delta
            table.append([
                row.user, row.role or "(none)", show_number(spent_eps),
                show_number(own.granted_epsilon) if own is not None else "-",
                f"{show_number(own.remaining_epsilon)} of {show_number(own.allowed_epsilon)}" if own
                else _no_own(policy, row.role),
                show_number(spent_delta),
                show_number(own.granted_delta) if own is not None else "-",
                f"{show_number(own.remaining_delta)} of {show_number(own.allowed_delta)}" if own
                else _no_own(policy, row.role),
                "no role" if row.role is None else show_number(row.now) if row.now is not None else "no budget",
                str(row.activity.charges),
                _when(row.activity.last_charge),
            ])
        _print_table(table, out)
        print(file=out)
        print("epsilon spent per user" + (" (of the user's budget)" if caps.per_user is not None
                                          else " (no per-user cap: scaled to the largest spend)"), file=out)
        largest = max((r.activity.spent_epsilon for r in rows), default=Decimal(0))
        width = max(len(r.user) for r in rows)
        for row in rows:
            if row.own is not None:
                spent, whole = row.own.spent_epsilon, row.own.allowed_epsilon
                label = f"{show_number(spent)} of {show_number(whole)}"
            else:
                spent, whole = row.activity.spent_epsilon, largest
                label = show_number(spent)
            share = float(spent / whole) if whole > 0 else (1.0 if spent > 0 else 0.0)
            print(f"  {row.user.ljust(width)}  {bar(share)} {round(share * 100):3d}%  {label}", file=out)
    if shared:
        print(file=out)
        print("shared budgets", file=out)
        table = [["scope", "name", "eps spent", "eps granted", "eps left", "delta spent", "delta granted",
                  "delta left"]]
        for s in shared:
            table.append([s.budget.scope, s.budget.name or "-", show_number(s.spent_epsilon),
                          show_number(s.granted_epsilon),
                          f"{show_number(s.remaining_epsilon)} of {show_number(s.allowed_epsilon)}",
                          show_number(s.spent_delta), show_number(s.granted_delta),
                          f"{show_number(s.remaining_delta)} of {show_number(s.allowed_delta)}"])
        _print_table(table, out)
    for role_name, activity in (accounts or {}).items():
        print(file=out)
        counted = "no shared release counts now" if not activity.charges else \
            f"{activity.charges} shared releases count now, the last at {_when(activity.last_charge)} UTC"
        print(f'role "{role_name}" shares answers (roles.{role_name}.share_answers): each release to one of its '
              f"users is charged once, to its budget above, and repeated to any of them at no cost; {counted}",
              file=out)


def _no_own(policy: Policy, role_name: str | None) -> str:
    """A user's own cap column when the policy gives none: none at all, or the role's shared budget instead."""
    role = policy.roles.get(role_name) if role_name is not None else None
    return "role's (shared)" if role is not None and role.share_answers else "no cap"


def bar(share: float, width: int = BAR_WIDTH) -> str:
    """[#####...............]: `share` of the width filled (clamped to 0..1; any spend shows at least one #)."""
    share = min(max(share, 0.0), 1.0)
    filled = round(share * width)
    if share > 0 and filled == 0:
        filled = 1
    return "[" + "#" * filled + "." * (width - filled) + "]"


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _print_table(table: list[list[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip(), file=out)
