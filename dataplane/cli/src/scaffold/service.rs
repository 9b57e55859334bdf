//! The sample application next to the flow: a user service for HTTP sinks, a Temporal worker for
//! Temporal sinks. Python with the standard library (plus the Temporal SDK for the worker), so it
//! runs on a developer machine without a toolchain install.

use super::{File, Options, SinkKind};

pub fn files(opts: &Options) -> Vec<File> {
    match opts.sink {
        SinkKind::Http => vec![
            File {
                executable: true,
                ..File::new("fiso/user-service/main.py", USER_SERVICE)
            },
            File::new("fiso/user-service/Dockerfile", USER_SERVICE_DOCKERFILE),
            File::new("fiso/user-service/README.md", USER_SERVICE_README),
        ],
        SinkKind::Temporal => vec![
            File {
                executable: true,
                ..File::new("fiso/temporal-worker/worker.py", TEMPORAL_WORKER)
            },
            File::new(
                "fiso/temporal-worker/requirements.txt",
                "temporalio>=1.9,<2\n",
            ),
            File::new("fiso/temporal-worker/Dockerfile", TEMPORAL_DOCKERFILE),
            File::new("fiso/temporal-worker/README.md", TEMPORAL_README),
        ],
    }
}

const USER_SERVICE: &str = r#"#!/usr/bin/env python3
"""Sample user service: receives CloudEvents from fiso-flow and calls out through fiso-link.

    curl -> fiso-flow(:8081) -> user-service(:8082) -> fiso-link(:3500) -> external-api
"""
import json
import os
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(os.environ.get("PORT", "8082"))
LINK = os.environ.get("FISO_LINK_URL", "http://localhost:3500/link")


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
        try:
            event = json.loads(body or b"{}")
        except json.JSONDecodeError:
            self.reply(400, {"error": "body is not JSON"})
            return
        print(f"received {event.get('type')} id={event.get('id')}: {json.dumps(event.get('data'))}", flush=True)
        reply = {"status": "processed", "id": event.get("id")}
        if os.environ.get("CALL_LINK", "0") == "1":
            reply["link"] = self.call_link(event)
        self.reply(200, reply)

    def call_link(self, event):
        # The service only ever talks to localhost: fiso-link reaches the outside world.
        req = urllib.request.Request(
            f"{LINK}/external-api/anything/orders",
            data=json.dumps(event.get("data")).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return {"status": resp.status}
        except urllib.error.HTTPError as err:
            return {"status": err.code}
        except OSError as err:
            return {"error": str(err)}

    def reply(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        pass


if __name__ == "__main__":
    print(f"user-service listening on :{PORT}", flush=True)
    ThreadingHTTPServer(("", PORT), Handler).serve_forever()
"#;

const USER_SERVICE_DOCKERFILE: &str = r#"FROM python:3.12-slim
WORKDIR /app
COPY main.py .
EXPOSE 8082
CMD ["python3", "main.py"]
"#;

const USER_SERVICE_README: &str = r#"# user-service

A sample service behind Fiso. `fiso dev` starts it for you, next to the flow and the link
proxy: its output appears inline as `[user-service] …` and `fiso logs --service user-service`
shows it again.

It listens on `PORT` (8082, the port of the flow's sink URL; `fiso dev` sets it) for the
CloudEvents the flow delivers, and with `CALL_LINK=1` it calls the outside world only through
the link proxy (`FISO_LINK_URL`, which `fiso dev` sets: `http://127.0.0.1:3500/link`).

Your own service takes its place the same way, with the same variables (its output prefixed
with `--app-name`, by default the program's name):

    fiso dev -- ./my-service
    fiso dev --app-name orders -- go run ./cmd/server

To run it yourself instead, start `fiso dev --no-service`, then `python3 fiso/user-service/main.py`.
"#;

const TEMPORAL_WORKER: &str = r#"#!/usr/bin/env python3
"""Sample Temporal worker for the flow's `ProcessOrderWorkflow`.

fiso-flow starts one workflow per event with the CloudEvent (JSON) as its argument; the activity
calls the outside world through fiso-link.

    pip install -r requirements.txt && python3 worker.py
"""
import asyncio
import json
import os
import urllib.request
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

TASK_QUEUE = os.environ.get("TASK_QUEUE", "order-processing")
LINK = os.environ.get("FISO_LINK_URL", "http://localhost:3500/link")


def _post(url, payload):
    req = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status


@activity.defn
async def handle_order(event: dict) -> str:
    data = event.get("data") or {}
    activity.logger.info("processing order %s", data.get("order_id"))
    if os.environ.get("CALL_LINK", "0") == "1":
        status = await asyncio.to_thread(_post, f"{LINK}/external-api/anything/orders", data)
        return f"order {data.get('order_id')} processed (external-api answered {status})"
    return f"order {data.get('order_id')} processed"


@workflow.defn(name="ProcessOrderWorkflow")
class ProcessOrderWorkflow:
    @workflow.run
    async def run(self, event: dict) -> str:
        return await workflow.execute_activity(
            handle_order, event, start_to_close_timeout=timedelta(seconds=30)
        )


async def main():
    client = await Client.connect(os.environ.get("TEMPORAL_ADDRESS", "localhost:7233"))
    worker = Worker(client, task_queue=TASK_QUEUE, workflows=[ProcessOrderWorkflow], activities=[handle_order])
    print(f"worker polling task queue {TASK_QUEUE}", flush=True)
    await worker.run()


if __name__ == "__main__":
    asyncio.run(main())
"#;

const TEMPORAL_DOCKERFILE: &str = r#"FROM python:3.12-slim
WORKDIR /app
COPY requirements.txt worker.py ./
RUN pip install --no-cache-dir -r requirements.txt
CMD ["python3", "worker.py"]
"#;

const TEMPORAL_README: &str = r#"# temporal-worker

Runs the `ProcessOrderWorkflow` that the flow starts for each event. Install its SDK once:

    python3 -m venv .venv && . .venv/bin/activate
    pip install -r fiso/temporal-worker/requirements.txt

then run it next to the data plane (its output inline as `[worker] …`, `FISO_LINK_URL` set):

    fiso dev --app-name worker -- python3 fiso/temporal-worker/worker.py

Needs a Temporal server on localhost:7233 (`temporal server start-dev`).
"#;
