"""Stage 2: settings and a task launch -> template context -> HCL -> parsed Job JSON."""
