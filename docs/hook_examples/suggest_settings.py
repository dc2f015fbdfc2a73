from cineml import hookimpl


@hookimpl
def suggest_settings(film):
    if "35mm" in film.name.lower():  # scans of 35 mm prints: fewer frames per second are plenty
        return {"extract.fps": (6, "a 35 mm scan: 6 frames a second")}
    return None
