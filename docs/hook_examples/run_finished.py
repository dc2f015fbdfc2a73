from cineml import hookimpl


@hookimpl
def run_finished(project, record):
    ran = [f"{s['stage']} ({s['seconds']:.0f} s)" for s in record["stages"] if s["ran"]]
    print(f"{project.name} finished: {', '.join(ran) or 'nothing to do'}")
