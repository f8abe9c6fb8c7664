"""The ``api`` service: the read side (leads, reports, dashboard), sales feedback, reps, and the demo inbox."""

from __future__ import annotations

from services.runtime import Container, ServicePart


def build(container: Container) -> ServicePart:
    from services.api.dashboard import build_router as dashboard_routes
    from services.api.demo import build_router as demo_routes
    from services.api.feedback import build_router as feedback_routes
    from services.api.leads import build_router as lead_routes
    from services.api.oncall_metrics import OnCallMetrics
    from services.api.reports import build_router as report_routes
    from services.api.reps import build_router as rep_routes

    part = ServicePart(name="api")
    part.routers += [lead_routes(), feedback_routes(), rep_routes(), report_routes(), dashboard_routes()]
    if container.demo:
        part.routers.append(demo_routes())
    metrics = OnCallMetrics(container)
    container.extras.setdefault("metrics_hooks", []).append(metrics.refresh)
    return part
