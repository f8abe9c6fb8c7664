"""The ``handoff`` command.

    handoff up                      # everything in one process (SQLite + embedded bus), demo-ready
    handoff serve scoring           # one service (split mode: Kafka + PostgreSQL)
    handoff migrate                 # apply the database migrations
    handoff check-config handoff.yaml
    handoff simulate --leads 200
    handoff dlq list | handoff dlq replay [ID...]
    handoff rescore [--dry-run --config NEW.yaml]
    handoff bench [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from services.config import ConfigError, load_config
from services.logging_setup import configure_logging
from services.runtime import SERVICES
from services.settings import Settings

DEMO_FILE = Path(".handoff-demo.json")
log = logging.getLogger("handoff")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="handoff", description="Lead handoff service")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="run every service in one process (embedded default, demo inbox)")
    up.add_argument("--no-demo", action="store_true", help="do not invent demo secrets or a demo token")

    serve = sub.add_parser("serve", help="run one service in this process (split mode)")
    serve.add_argument("service", choices=SERVICES)

    sub.add_parser("migrate", help="apply database migrations to HANDOFF_DATABASE_URL")

    check = sub.add_parser("check-config", help="validate a config file (exit 2 with every error)")
    check.add_argument("path", nargs="?", help="config file (default: HANDOFF_CONFIG, handoff.yaml, the example)")

    sim = sub.add_parser("simulate", help="send realistic buyer journeys to a running ingest")
    sim.add_argument("--leads", type=int, default=200, help="how many buyers (default 200)")
    sim.add_argument("--url", default=None, help="base URL of the service (default http://127.0.0.1:8080)")
    sim.add_argument("--token", default=None, help="API token for the feedback calls (default: demo token)")
    sim.add_argument("--seed", type=int, default=7, help="random seed (same seed, same journeys)")
    sim.add_argument("--concurrency", type=int, default=8)

    dlq = sub.add_parser("dlq", help="inspect and re-drive dead letters")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    dlq_list = dlq_sub.add_parser("list", help="list dead letters not yet replayed")
    dlq_list.add_argument("--all", action="store_true", help="include replayed ones")
    dlq_list.add_argument("--json", action="store_true", help="print JSON lines")
    replay = dlq_sub.add_parser("replay", help="re-drive dead letters (all pending when no ID is given)")
    replay.add_argument("ids", nargs="*", type=int)

    rescore = sub.add_parser("rescore", help="recompute every lead's score under the current rules")
    rescore.add_argument("--dry-run", action="store_true", help="preview only; write nothing")
    rescore.add_argument("--config", dest="rescore_config", default=None, help="rules to apply (default current)")
    rescore.add_argument("--top", type=int, default=10, help="how many largest movers to show")

    bench = sub.add_parser("bench", help="performance benchmark: prints a table and writes JSON")
    bench.add_argument("--quick", action="store_true", help="short runs (a smoke test of the benchmark)")
    bench.add_argument("--json", dest="json_path", default="bench-results/bench.json")
    bench.add_argument("--sections", default="ingest,scoring,routing,e2e,report")
    bench.add_argument("--soak", action="store_true", help="5-minute soak measuring memory growth")

    sub.add_parser("reference", help="print the configuration reference (Markdown)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    configure_logging(settings)  # emails masked, secrets redacted in every log line
    for noisy in ("alembic", "httpx", "aiokafka"):  # INFO lines per start / request / rebalance: noise
        logging.getLogger(noisy).setLevel(logging.WARNING)
    handler = globals()[f"cmd_{args.command.replace('-', '_')}"]
    try:
        return int(handler(args, settings) or 0)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def cmd_check_config(args: argparse.Namespace, settings: Settings) -> int:
    path = Path(args.path) if args.path else settings.config_path()
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"{exc.origin}: {len(exc.problems)} problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    from services.config_checks import runtime_problems

    # The file is valid; what the environment lacks is reported as a warning (it is not the file's fault).
    for warning in runtime_problems(config):
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{path or 'packaged example config'}: OK ({len(config.sources)} sources, "
          f"{len(config.scoring.engagement)} engagement rules, {len(config.scoring.fit)} fit rules, "
          f"{len(config.teams)} teams, {len(config.reps)} reps)")
    return 0


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from services.db.migrate import migrate

    asyncio.run(migrate(settings.database_url))
    print(f"database at {_safe_url(settings.database_url)} is up to date")
    return 0


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    return _run_process(settings, {args.service}, demo=False)


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    demo = not args.no_demo
    token = None
    if demo:
        token = _prepare_demo(settings)
        configure_logging(settings, extra_secrets=[token] if token else ())  # the invented secrets too
    from services.db.migrate import migrate

    asyncio.run(migrate(settings.database_url))
    return _run_process(settings, set(SERVICES), demo=demo, demo_token=token)


def _prepare_demo(settings: Settings) -> str | None:
    """Demo mode: invent the secrets the example config names, unless the environment has them."""
    state: dict[str, Any] = {}
    if DEMO_FILE.exists():
        try:
            state = json.loads(DEMO_FILE.read_text())
        except ValueError:
            state = {}
    config = load_config(settings.config_path())
    keys: dict[str, str] = state.get("secrets", {})
    names = [n for s in config.sources for n in s.secret_env_names()]
    if config.crm and config.crm.secret_env:
        names.append(config.crm.secret_env)
    if config.alerts.pagerduty and config.alerts.pagerduty.routing_key_env:
        names.append(config.alerts.pagerduty.routing_key_env)
    for name in names:
        if not os.environ.get(name):
            keys.setdefault(name, f"demo-{name.lower().replace('_', '-')}-{secrets.token_hex(4)}")
            os.environ[name] = keys[name]
    token = None
    if not settings.api_tokens():
        token = state.get("api_token") or secrets.token_urlsafe(18)
    DEMO_FILE.write_text(json.dumps({"api_token": token, "secrets": keys,
                                     "url": f"http://{settings.http_host}:{settings.http_port}"}, indent=2))
    os.chmod(DEMO_FILE, 0o600)
    return token


def _run_process(settings: Settings, services: set[str], *, demo: bool, demo_token: str | None = None) -> int:
    from services.runtime import bootstrap
    from services.serve import install_signal_handlers, run, run_loop

    async def main() -> None:
        stop = asyncio.Event()
        install_signal_handlers(stop)
        container = await bootstrap(settings, services, demo=demo, demo_token=demo_token)
        try:
            await run(container, stop, on_ready=lambda port: _banner(settings, services, port, container))
        finally:
            await container.close()

    run_loop(main())
    return 0


def _banner(settings: Settings, services: set[str], port: int, container: Any) -> None:
    base = f"http://{settings.http_host}:{port}"
    mode = "Kafka " + settings.kafka_bootstrap if settings.kafka_enabled else "embedded bus"
    print(f"handoff: {', '.join(sorted(services))} running ({mode}, database {_safe_url(settings.database_url)})")
    print(f"  health      {base}/healthz   ready {base}/readyz   metrics {base}/metrics")
    if "ingest" in services:
        print(f"  ingest      POST {base}/v1/touchpoints   Segment {base}/v1/track   webhooks {base}/webhooks/<id>")
    if "api" in services:
        token = container.api_tokens[0] if container.api_tokens else None
        suffix = f"?token={token}" if container.demo and token else ""
        print(f"  dashboard   {base}/dashboard{suffix}")
        print(f"  leads API   {base}/v1/leads   reports {base}/v1/reports/funnel")
        if container.demo:
            print(f"  demo inbox  {base}/demo/inbox   (the CRM and alert sinks of the example config)")
            print(f"  API token   {token}   (demo: also saved in {DEMO_FILE})")
            print("  next, in another terminal:  .venv/bin/handoff simulate --leads 200")
    sys.stdout.flush()


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from services.simulate import simulate_command

    return simulate_command(args, settings)


def cmd_dlq(args: argparse.Namespace, settings: Settings) -> int:
    from services.dlq import dlq_command

    return dlq_command(args, settings)


def cmd_rescore(args: argparse.Namespace, settings: Settings) -> int:
    from scoring.rescore import rescore_command

    return rescore_command(args, settings)


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from services.bench.cli import bench_command

    return bench_command(args, settings)


def cmd_reference(args: argparse.Namespace, settings: Settings) -> int:
    from services.reference import render_reference

    print(render_reference())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
