from cineml import hookimpl


@hookimpl
def run_started(project, plan):
    todo = [step["stage"] for step in plan if step["run"]]
    print(f"{project.name}: running {', '.join(todo) or 'nothing, all up to date'}")
