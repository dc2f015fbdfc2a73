from cineml import hookimpl


@hookimpl
def stage_failed(project, stage, error):
    if not isinstance(error, KeyboardInterrupt):
        print(f"{project.name}: {stage} failed; run again after fixing it, finished work is kept")
