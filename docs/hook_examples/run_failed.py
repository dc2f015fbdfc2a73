from cineml import hookimpl


@hookimpl
def run_failed(project, record, error):
    if record["status"] == "failed":  # not Ctrl-C
        with open(project.root / "failures.log", "a") as log:
            print(record["started"], f"{type(error).__name__}: {error}", file=log)
