import json
import os
import urllib.request

from cineml import hookimpl


@hookimpl
def snapshot_written(project, kimg, checkpoint, fakes):
    url = os.environ.get("FAKES_WEBHOOK")  # e.g. a chat channel's incoming webhook
    if url and fakes is not None:
        body = json.dumps({"text": f"{project.name} at {kimg:g} kimg: {fakes} ({checkpoint.name})"}).encode()
        request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(request, timeout=10).close()
        except OSError as error:  # a network hiccup must not stop training
            print(f"could not post {fakes.name}: {error}")
