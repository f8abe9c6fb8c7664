"""The read side and the sales-facing API: leads, feedback, reps, reports, dashboard, demo inbox."""
