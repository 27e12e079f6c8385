"""A FAKE Grafana, not Grafana: an in-memory stand-in for exactly the HTTP endpoints cluster/observe/push.py calls, served
by a real HTTP server on 127.0.0.1 (ephemeral port, one thread), so push runs through grafana-client as it would against
Grafana 11. It answers with Grafana's status codes: 401 for a missing or wrong bearer token, 404 for a missing uid
(an empty body for alert rules), 409 for a datasource or folder whose uid or name is taken, 412 for a dashboard saved over
another without `overwrite`, 400 for an alert rule whose uid or title is taken in its folder (Grafana's unique-constraint
answer) or that misses a field. It checks nothing else: no queries run, no panel or rule JSON is interpreted.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = "11.6.0"
RULE_FIELDS = ("uid", "title", "folderUID", "ruleGroup", "condition", "data", "for")


class Reply(Exception):
    """Ends a request with this status and JSON body (None: empty body), like Grafana's error responses."""

    def __init__(self, status: int, body: object = None):
        super().__init__(status)
        self.status, self.body = status, body


def _message(status: int, message: str) -> Reply:
    return Reply(status, {"message": message})


class FakeGrafana:
    def __init__(self, token: str):
        self.token = token
        self.datasources: dict[str, dict] = {}
        self.folders: dict[str, dict] = {}
        self.dashboards: dict[str, dict] = {}  # uid -> {"dashboard": ..., "folderUid": ...}
        self.rules: dict[str, dict] = {}
        self.calls: list[tuple[str, str, int]] = []  # (method, path, status) of every request, in order
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._routes = [
            ("GET", r"/api/frontend/settings", self._settings),
            ("GET", r"/api/datasources/uid/(?P<uid>[^/]+)", self._get_datasource),
            ("POST", r"/api/datasources", self._create_datasource),
            ("PUT", r"/api/datasources/uid/(?P<uid>[^/]+)", self._update_datasource),
            ("GET", r"/api/folders/(?P<uid>[^/]+)", self._get_folder),
            ("POST", r"/api/folders", self._create_folder),
            ("PUT", r"/api/folders/(?P<uid>[^/]+)", self._update_folder),
            ("GET", r"/api/dashboards/uid/(?P<uid>[^/]+)", self._get_dashboard),
            ("POST", r"/api/dashboards/db", self._save_dashboard),
            ("GET", r"/api/v1/provisioning/alert-rules", self._list_rules),
            ("GET", r"/api/v1/provisioning/alert-rules/(?P<uid>[^/]+)", self._get_rule),
            ("POST", r"/api/v1/provisioning/alert-rules", self._create_rule),
            ("PUT", r"/api/v1/provisioning/alert-rules/(?P<uid>[^/]+)", self._update_rule),
            ("DELETE", r"/api/v1/provisioning/alert-rules/(?P<uid>[^/]+)", self._delete_rule),
        ]
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-grafana", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeGrafana:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                status, body = fake._answer(self.command, self.path.split("?")[0], self.headers.get("Authorization"),
                                            self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                payload = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

            def log_message(self, *args: object) -> None:  # fake.calls is the log
                pass

        return Handler

    def _answer(self, method: str, path: str, authorization: str | None, raw: bytes) -> tuple[int, object]:
        try:
            self._authorize(authorization)
            for route_method, pattern, handle in self._routes:
                match = re.fullmatch(pattern, path)
                if match and route_method == method:
                    with self._lock:
                        status, body = handle(json.loads(raw) if raw else None, **match.groupdict())
                    break
            else:
                raise _message(404, "Not found")
        except Reply as reply:
            status, body = reply.status, reply.body
        self.calls.append((method, path, status))
        return status, body

    def _authorize(self, authorization: str | None) -> None:
        if not authorization:
            raise _message(401, "Unauthorized")
        if authorization != f"Bearer {self.token}":
            raise Reply(401, {"message": "Invalid API key", "messageId": "api-key.invalid", "statusCode": 401})

    def _settings(self, _: None) -> tuple[int, dict]:
        return 200, {"buildInfo": {"version": VERSION, "edition": "Open Source (fake)"}}

    def _get_datasource(self, _: None, uid: str) -> tuple[int, dict]:
        if uid not in self.datasources:
            raise _message(404, "Data source not found")
        return 200, self.datasources[uid]

    def _check_datasource(self, body: dict, uid: str) -> None:
        if not body.get("name") or not body.get("type"):
            raise _message(400, "Validation error: name and type are required")
        if any(ds["name"] == body["name"] and other != uid for other, ds in self.datasources.items()):
            raise _message(409, "data source with the same name already exists")

    def _create_datasource(self, body: dict) -> tuple[int, dict]:
        uid = body.get("uid") or f"ds{next(self._ids)}"
        if uid in self.datasources:
            raise _message(409, "data source with the same uid already exists")
        self._check_datasource(body, uid)
        self.datasources[uid] = {**body, "uid": uid, "id": next(self._ids), "version": 1}
        return 200, {"datasource": self.datasources[uid], "id": self.datasources[uid]["id"], "message": "Datasource added",
                     "name": body["name"]}

    def _update_datasource(self, body: dict, uid: str) -> tuple[int, dict]:
        if uid not in self.datasources:
            raise _message(404, "Data source not found")
        self._check_datasource(body, uid)
        old = self.datasources[uid]
        self.datasources[uid] = {**body, "uid": uid, "id": old["id"], "version": old["version"] + 1}
        return 200, {"datasource": self.datasources[uid], "id": old["id"], "message": "Datasource updated", "name": body["name"]}

    def _get_folder(self, _: None, uid: str) -> tuple[int, dict]:
        if uid not in self.folders:
            raise _message(404, "folder not found")
        return 200, self.folders[uid]

    def _create_folder(self, body: dict) -> tuple[int, dict]:
        uid = body.get("uid") or f"folder{next(self._ids)}"
        if uid in self.folders:
            raise _message(409, "a folder with the same uid already exists")
        if any(folder["title"] == body["title"] for folder in self.folders.values()):
            raise _message(409, "a dashboard or folder with the same name already exists")
        self.folders[uid] = {"id": next(self._ids), "uid": uid, "title": body["title"], "url": f"/dashboards/f/{uid}/",
                             "version": 1}
        return 200, self.folders[uid]

    def _update_folder(self, body: dict, uid: str) -> tuple[int, dict]:
        if uid not in self.folders:
            raise _message(404, "folder not found")
        folder = self.folders[uid]
        if not body.get("overwrite") and body.get("version") != folder["version"]:
            raise Reply(412, {"message": "The folder has been changed by someone else", "status": "version-mismatch"})
        folder.update(title=body.get("title", folder["title"]), version=folder["version"] + 1)
        return 200, folder

    def _get_dashboard(self, _: None, uid: str) -> tuple[int, dict]:
        if uid not in self.dashboards:
            raise _message(404, "Dashboard not found")
        saved = self.dashboards[uid]
        return 200, {"dashboard": saved["dashboard"], "meta": {"folderUid": saved["folderUid"], "url": f"/d/{uid}/"}}

    def _save_dashboard(self, body: dict) -> tuple[int, dict]:
        board, folder_uid, overwrite = body["dashboard"], body.get("folderUid", ""), body.get("overwrite", False)
        if not board.get("title"):
            raise _message(400, "Dashboard title cannot be empty")
        if folder_uid and folder_uid not in self.folders:
            raise _message(400, "folder not found")
        uid = board.get("uid") or f"dash{next(self._ids)}"
        old = self.dashboards.get(uid)
        if old and not overwrite and board.get("version") != old["dashboard"]["version"]:
            raise Reply(412, {"message": "The dashboard has been changed by someone else", "status": "version-mismatch"})
        if not overwrite and any(saved["dashboard"]["title"] == board["title"] and saved["folderUid"] == folder_uid
                                 and other != uid for other, saved in self.dashboards.items()):
            raise Reply(412, {"message": "A dashboard with the same name in the folder already exists", "status": "name-exists"})
        version = old["dashboard"]["version"] + 1 if old else 1
        dashboard_id = old["dashboard"]["id"] if old else next(self._ids)
        self.dashboards[uid] = {"dashboard": {**board, "uid": uid, "id": dashboard_id, "version": version},
                                "folderUid": folder_uid}
        return 200, {"id": dashboard_id, "uid": uid, "url": f"/d/{uid}/", "status": "success", "version": version}

    def _list_rules(self, _: None) -> tuple[int, list]:
        return 200, list(self.rules.values())

    def _get_rule(self, _: None, uid: str) -> tuple[int, dict]:
        if uid not in self.rules:
            raise Reply(404)
        return 200, self.rules[uid]

    def _check_rule(self, body: dict, uid: str) -> None:
        missing = [name for name in RULE_FIELDS if name not in body]
        if missing:
            raise _message(400, f"invalid alert rule: missing {missing}")
        if body["folderUID"] not in self.folders:
            raise _message(400, f"invalid alert rule: folder {body['folderUID']} does not exist")
        if body["condition"] not in {query["refId"] for query in body["data"]}:
            raise _message(400, f"invalid alert rule: condition {body['condition']} is not one of its queries")
        if any(rule["title"] == body["title"] and rule["folderUID"] == body["folderUID"] and other != uid
               for other, rule in self.rules.items()):
            raise _message(400, f"[alerting.alert-rule.conflict] conflicting alert rule found [rule_uid: '{uid}', "
                                f"title: '{body['title']}']: rule title under the same organisation and folder should be unique")

    def _create_rule(self, body: dict) -> tuple[int, dict]:
        uid = body.get("uid") or f"rule{next(self._ids)}"
        if uid in self.rules:
            raise _message(400, f"[alerting.alert-rule.conflict] conflicting alert rule found [rule_uid: '{uid}']: "
                                "rule UID under the same organisation should be unique")
        self._check_rule({**body, "uid": uid}, uid)
        self.rules[uid] = {**body, "uid": uid, "id": next(self._ids), "orgID": 1, "provenance": "api"}
        return 201, self.rules[uid]

    def _update_rule(self, body: dict, uid: str) -> tuple[int, dict]:
        if uid not in self.rules:
            raise Reply(404)
        self._check_rule({**body, "uid": uid}, uid)
        self.rules[uid] = {**body, "uid": uid, "id": self.rules[uid]["id"], "orgID": 1, "provenance": "api"}
        return 200, self.rules[uid]

    def _delete_rule(self, _: None, uid: str) -> tuple[int, None]:
        self.rules.pop(uid, None)
        return 204, None
