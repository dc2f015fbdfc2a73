from cineml import hookimpl


@hookimpl
def stage_finished(project, stage, output, seconds):
    with open(project.root / "timings.log", "a") as log:
        print(f"{stage}: {seconds:.1f} s -> {output}", file=log)
