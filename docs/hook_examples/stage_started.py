from cineml import hookimpl


@hookimpl
def stage_started(project, stage, options):
    settings = ", ".join(f"{key}={value!r}" for key, value in options.items())
    print(f"{project.name}: {stage} ({settings})")
