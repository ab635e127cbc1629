"""Local HubSpot and Salesforce servers for the CRM tests: real HTTP on 127.0.0.1, the endpoints'
request and response shapes (HubSpot CRM v3 objects/properties/search, v4 associations; Salesforce
REST sObject Collections, Bulk API 2.0 ingest jobs, SOQL query with nextRecordsUrl, limits), with
pagination, 429 + Retry-After and partial batch errors injectable. The real clients talk to them.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

NOW = "2026-12-03T07:00:00.000Z"


@dataclass
class Request:
    method: str
    path: str
    query: dict
    headers: dict  # lower-cased names
    body: bytes

    def json(self):
        return json.loads(self.body) if self.body else None


Reply = tuple[int, dict, bytes]


def reply(status: int, body=None, headers: dict | None = None) -> Reply:
    data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    return status, {"Content-Type": "application/json", **(headers or {})}, data


class FakeServer:
    """Routes ``(method, regex)`` to handlers; records every request; ``inject`` answers first.

    ``inject(request, index) -> Reply | None`` (index counts the requests before it) can answer any
    request instead of the route, e.g. a 429 with Retry-After, or a 500 from the n-th request on.
    """

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.routes: list[tuple[str, re.Pattern, Callable]] = []
        self.inject: Callable[[Request, int], Reply | None] | None = None
        self.lock = threading.RLock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                parts = urlsplit(self.path)
                request = Request(self.command, parts.path, parse_qs(parts.query),
                                  {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length))
                status, headers, body = server.handle(request)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def route(self, method: str, pattern: str):
        def register(fn):
            self.routes.append((method, re.compile(pattern + "$"), fn))
            return fn
        return register

    def handle(self, request: Request) -> Reply:
        with self.lock:
            index = len(self.requests)
            self.requests.append(request)
            if self.inject is not None and (injected := self.inject(request, index)) is not None:
                return injected
            for method, pattern, fn in self.routes:
                match = pattern.match(request.path)
                if method == request.method and match:
                    try:
                        return fn(request, *match.groups())
                    except Exception as exc:  # noqa: BLE001 - a bug in the fake: show it, do not hang the client
                        return reply(500, {"message": f"fake server error: {type(exc).__name__}: {exc}"})
            return reply(404, {"message": f"no route {request.method} {request.path}"})

    def start(self) -> FakeServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def calls(self, method: str, pattern: str) -> list[Request]:
        rx = re.compile(pattern + "$")
        return [r for r in self.requests if r.method == method and rx.match(r.path)]


# -- HubSpot --------------------------------------------------------------------------------------


def _property(name: str, **extra) -> dict:
    base = {"name": name, "label": name, "type": "string", "fieldType": "text", "groupName": "contactinformation",
            "description": "", "options": [], "hasUniqueValue": False, "hidden": False, "formField": False}
    return {**base, **extra}


@dataclass
class HubSpotState:
    token: str
    properties: dict = field(default_factory=lambda: {
        "contacts": {p: _property(p) for p in ("email", "firstname", "lifecyclestage", "industry", "jobtitle",
                                               "country", "hs_lastmodifieddate")},
        "companies": {p: _property(p, groupName="companyinformation") for p in ("name", "domain")},
        "deals": {p: _property(p, groupName="dealinformation") for p in ("dealname", "amount", "closedate",
                                                                         "dealstage", "pipeline",
                                                                         "hs_lastmodifieddate")}})
    groups: dict = field(default_factory=lambda: {"contacts": {"contactinformation"},
                                                  "companies": {"companyinformation"}})
    objects: dict = field(default_factory=lambda: {"contacts": {}, "companies": {}, "deals": {}})
    associations: dict = field(default_factory=dict)  # deal id -> [contact ids]
    company_associations: dict = field(default_factory=dict)  # deal id -> [company ids]
    contact_companies: dict = field(default_factory=dict)  # contact id -> [company ids]
    refuse: set = field(default_factory=set)  # upsert ids answered as errors in a 207
    next_id: int = 1000
    upserted: list = field(default_factory=list)  # (object type, id value) of every accepted upsert input
    page_size: int = 2  # small, so that pagination is exercised
    index: dict = field(default_factory=dict)  # (object type, id property) -> {value: object id}, a cache
    search_cap: int = 10_000


def hubspot_server(token: str) -> tuple[FakeServer, HubSpotState]:
    server, state = FakeServer(), HubSpotState(token)

    def authorised(request: Request) -> Reply | None:
        if request.headers.get("authorization") != f"Bearer {state.token}":
            # HubSpot's 401 body does not echo the token; this one does, to prove the client side masks it
            return reply(401, {"status": "error", "category": "INVALID_AUTHENTICATION",
                               "message": f"Authentication credentials not found: got {request.headers.get('authorization')}"})
        return None

    def guarded(fn):
        def wrapper(request, *args):
            return authorised(request) or fn(request, *args)
        return wrapper

    @server.route("GET", r"/crm/v3/properties/(\w+)")
    @guarded
    def properties(request, object_type):
        return reply(200, {"results": list(state.properties[object_type].values())})

    @server.route("GET", r"/crm/v3/properties/(\w+)/groups")
    @guarded
    def groups(request, object_type):
        return reply(200, {"results": [{"name": g, "label": g, "displayOrder": -1, "archived": False}
                                       for g in sorted(state.groups.get(object_type, ()))]})

    @server.route("POST", r"/crm/v3/properties/(\w+)/groups")
    @guarded
    def create_group(request, object_type):
        body = request.json()
        state.groups.setdefault(object_type, set()).add(body["name"])
        return reply(201, {"name": body["name"], "label": body["label"], "displayOrder": -1, "archived": False})

    @server.route("POST", r"/crm/v3/properties/(\w+)/batch/create")
    @guarded
    def create_properties(request, object_type):
        out = []
        for spec in request.json()["inputs"]:
            if spec["groupName"] not in state.groups.get(object_type, ()):
                return reply(400, {"status": "error", "category": "VALIDATION_ERROR",
                                   "message": f"group {spec['groupName']} does not exist"})
            state.properties[object_type][spec["name"]] = _property(**{**spec, "description": ""})
            out.append(state.properties[object_type][spec["name"]])
        return reply(201, {"status": "COMPLETE", "results": out, "startedAt": NOW, "completedAt": NOW})

    @server.route("POST", r"/crm/v3/objects/(contacts|companies)/batch/upsert")
    @guarded
    def upsert(request, object_type):
        inputs = request.json()["inputs"]
        if len(inputs) > 100:
            return reply(400, {"status": "error", "category": "VALIDATION_ERROR", "message": "at most 100 inputs"})
        results, errors = [], []
        for item in inputs:
            unknown = [p for p in item["properties"] if p not in state.properties[object_type]]
            if unknown:
                return reply(400, {"status": "error", "category": "VALIDATION_ERROR",
                                   "message": f"Property values were not valid: {unknown} do not exist"})
            id_property, key = item["idProperty"], item["id"]
            if id_property != "email" and not state.properties[object_type].get(id_property, {}).get("hasUniqueValue"):
                return reply(400, {"status": "error", "category": "VALIDATION_ERROR",
                                   "message": f"{id_property} is not a unique property"})
            if key in state.refuse:
                errors.append({"status": "error", "category": "VALIDATION_ERROR", "message": f"{key} is not valid",
                               "context": {"ids": [key]}, "links": {}, "errors": []})
                continue
            store = state.objects[object_type]
            index = state.index.setdefault((object_type, id_property), {})
            found = store.get(index.get(key, ""))
            if found is None or found["properties"].get(id_property) != key:
                found = next((o for o in store.values() if o["properties"].get(id_property) == key), None)
            if found is None:
                state.next_id += 1
                found = {"id": str(state.next_id), "properties": {id_property: key}}
                store[found["id"]] = found
            index[key] = found["id"]
            found["properties"].update(item["properties"])
            state.upserted.append((object_type, key))
            results.append({"id": found["id"], "properties": found["properties"], "createdAt": NOW,
                            "updatedAt": NOW, "new": False, "archived": False})
        body = {"status": "COMPLETE", "results": results, "startedAt": NOW, "completedAt": NOW}
        if errors:
            return reply(207, {**body, "errors": errors, "numErrors": len(errors)})
        return reply(200, body)

    @server.route("POST", r"/crm/v3/objects/(deals|contacts)/search")
    @guarded
    def search(request, object_type):
        body = request.json()
        rows = list(state.objects[object_type].values())
        for group in body.get("filterGroups") or []:  # one group: every filter must hold
            for f in group["filters"]:
                rows = [r for r in rows if _holds(r["properties"].get(f["propertyName"]), f)]
        rows.sort(key=lambda r: (r["properties"].get("hs_lastmodifieddate") or "", int(r["id"])))
        start = int(body.get("after") or 0)
        limit = min(int(body.get("limit") or 10), state.page_size)
        if start + limit > state.search_cap:  # as HubSpot: 10,000 results of one query at most
            return reply(400, {"status": "error", "category": "VALIDATION_ERROR",
                               "message": f"paging past {state.search_cap} results is not allowed"})
        page = rows[start:start + limit]
        wanted = body.get("properties") or []
        out = {"total": len(rows), "results": [
            {"id": r["id"], "properties": {k: r["properties"].get(k) for k in wanted}, "createdAt": NOW,
             "updatedAt": NOW, "archived": False} for r in page]}
        if start + limit < len(rows):
            out["paging"] = {"next": {"after": str(start + limit)}}
        return reply(200, out)

    @server.route("POST", r"/crm/v4/associations/(deals|contacts)/(contacts|companies)/batch/read")
    @guarded
    def associations(request, source, to):
        links = {("deals", "contacts"): state.associations, ("deals", "companies"): state.company_associations,
                 ("contacts", "companies"): state.contact_companies}[(source, to)]
        results = []
        for i in request.json()["inputs"]:  # `page_size` associations per record, then paging.next.after
            start = int(i.get("after") or 0)
            linked = links.get(i["id"], [])
            result = {"from": {"id": i["id"]}, "to": [
                {"toObjectId": int(c), "associationTypes": [{"category": "HUBSPOT_DEFINED", "label": None,
                                                             "typeId": 3 if to == "contacts" else 5}]}
                for c in linked[start:start + state.page_size]]}
            if start + state.page_size < len(linked):
                result["paging"] = {"next": {"after": str(start + state.page_size)}}
            results.append(result)
        return reply(200, {"status": "COMPLETE", "results": results, "startedAt": NOW, "completedAt": NOW})

    @server.route("POST", r"/crm/v3/objects/(contacts|companies)/batch/read")
    @guarded
    def read_records(request, object_type):
        body = request.json()
        store = state.objects[object_type]
        results = [{"id": i["id"], "properties": {k: store[i["id"]]["properties"].get(k) for k in body["properties"]},
                    "createdAt": NOW, "updatedAt": NOW, "archived": False}
                   for i in body["inputs"] if i["id"] in store]
        return reply(200, {"status": "COMPLETE", "results": results, "startedAt": NOW, "completedAt": NOW})

    return server, state


def _ms(value):
    """HubSpot compares datetimes as milliseconds since the epoch (ISO text is converted)."""
    if value is None or str(value).isdigit():
        return None if value is None else int(value)
    return int(dt.datetime.fromisoformat(str(value)).timestamp() * 1000)  # Python 3.11 reads a trailing Z


def _holds(value, f: dict) -> bool:
    op = f["operator"]
    if f["propertyName"] == "hs_lastmodifieddate":
        value, f = _ms(value), {**f, "value": _ms(f.get("value"))}
    if op == "IN":
        return value in f["values"]
    if op == "EQ":
        return value == f["value"]
    if op in ("GT", "GTE"):
        return value is not None and (value > f["value"] if op == "GT" else value >= f["value"])
    raise ValueError(f"operator {op} not in the fake")


# -- Salesforce -----------------------------------------------------------------------------------


def self_signed_certificate(folder) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key (simple-salesforce builds https:// URLs only)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = f"{folder}/sf-cert.pem", f"{folder}/sf-key.pem"
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path


REQUIRED = {"Contact": ("LastName",), "Lead": ("LastName", "Company"), "Account": ("Name",)}


@dataclass
class SalesforceState:
    token: str
    version: str = "60.0"
    fields: dict = field(default_factory=lambda: {
        "Contact": {"Id", "LastName", "Email", "AccountId", "LeadSource", "Title", "MailingCountry",
                    "LastModifiedDate"},
        "Lead": {"Id", "LastName", "Company", "Email", "LeadSource", "Title", "Country", "LastModifiedDate"},
        "Account": {"Id", "Name"},
        "Opportunity": {"Id", "Name", "StageName", "CloseDate", "Amount", "AccountId", "LastModifiedDate"},
        "OpportunityContactRole": {"Id", "OpportunityId", "ContactId"}})
    records: dict = field(default_factory=lambda: {k: {} for k in ("Contact", "Lead", "Account", "Opportunity",
                                                                    "OpportunityContactRole")})
    jobs: dict = field(default_factory=dict)
    created_fields: list = field(default_factory=list)
    upserted: list = field(default_factory=list)  # (object, external id value) of every accepted record
    api_used: int = 0
    api_max: int = 15000
    index: dict = field(default_factory=dict)  # (object, external id field) -> {value: record Id}, a cache
    next_id: int = 1
    page_size: int = 2

    def new_id(self, prefix: str) -> str:
        self.next_id += 1
        return f"{prefix}{self.next_id:015d}"

    def upsert(self, sobject: str, external_field: str, record: dict) -> dict:
        unknown = sorted(set(record) - self.fields[sobject] - {"attributes"})
        if unknown:
            raise KeyError(f"No such column '{unknown[0]}' on sobject of type {sobject}")
        key = record[external_field]
        store = self.records[sobject]
        index = self.index.setdefault((sobject, external_field), {})
        found = store.get(index.get(key, ""))
        if found is None or found.get(external_field) != key:
            found = next((r for r in store.values() if r.get(external_field) == key), None)
        if found is None:
            missing = [f for f in REQUIRED[sobject] if not record.get(f)]
            if missing:
                return {"success": False, "errors": [{"statusCode": "REQUIRED_FIELD_MISSING",
                                                      "message": f"Required fields are missing: {missing}",
                                                      "fields": missing}]}
            found = {"Id": self.new_id("003")}
            store[found["Id"]] = found
        found.update({k: v for k, v in record.items() if k != "attributes"})
        index[key] = found["Id"]
        self.upserted.append((sobject, key))
        return {"id": found["Id"], "success": True, "errors": [], "created": False}


def salesforce_server(token: str, cert: tuple[str, str]) -> tuple[FakeServer, SalesforceState]:
    import csv
    import io
    import ssl

    server, state = FakeServer(), SalesforceState(token)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*cert)
    server.server.socket = context.wrap_socket(server.server.socket, server_side=True)
    server.url = server.url.replace("http://", "https://")
    base = rf"/services/data/v{re.escape(state.version)}"

    def guarded(fn):
        def wrapper(request, *args):
            if request.headers.get("authorization") != f"Bearer {state.token}":
                return reply(401, [{"message": f"Session expired or invalid: {request.headers.get('authorization')}",
                                    "errorCode": "INVALID_SESSION_ID"}])
            state.api_used += 1
            status, headers, body = fn(request, *args)
            return status, {**headers, "Sforce-Limit-Info": f"api-usage={state.api_used}/{state.api_max}"}, body
        return wrapper

    @server.route("GET", base + r"/limits/?")
    @guarded
    def limits(request):
        return reply(200, {"DailyApiRequests": {"Max": state.api_max, "Remaining": state.api_max - state.api_used}})

    @server.route("GET", base + r"/sobjects/(\w+)/describe/?")
    @guarded
    def describe(request, sobject):
        return reply(200, {"name": sobject, "fields": [{"name": f, "type": "string"} for f in sorted(state.fields[sobject])]})

    @server.route("POST", base + r"/tooling/sobjects/CustomField/?")
    @guarded
    def create_field(request):
        body = request.json()
        sobject, name = body["FullName"].split(".")
        state.fields[sobject].add(name)
        state.created_fields.append((sobject, name, body["Metadata"]))
        return reply(201, {"id": state.new_id("00N"), "success": True, "errors": []})

    @server.route("PATCH", base + r"/composite/sobjects/(\w+)/(\w+)")
    @guarded
    def collections(request, sobject, external_field):
        body = request.json()
        if len(body["records"]) > 200:
            return reply(400, [{"message": "too many records", "errorCode": "EXCEEDED_MAX_SIZE_REQUEST"}])
        try:
            results = [state.upsert(sobject, external_field, r) for r in body["records"]]
        except KeyError as exc:
            return reply(400, [{"message": str(exc.args[0]), "errorCode": "INVALID_FIELD"}])
        return reply(200, results)

    @server.route("POST", base + r"/jobs/ingest/?")
    @guarded
    def create_job(request):
        body = request.json()
        job = {"id": f"750{len(state.jobs):015d}", "state": "Open", "object": body["object"],
               "operation": body["operation"], "externalIdFieldName": body.get("externalIdFieldName"),
               "contentType": "CSV", "numberRecordsProcessed": 0, "numberRecordsFailed": 0, "data": "",
               "failed": []}
        state.jobs[job["id"]] = job
        return reply(200, {k: v for k, v in job.items() if k not in ("data", "failed")})

    @server.route("PUT", base + r"/jobs/ingest/(\w+)/batches")
    @guarded
    def upload(request, job_id):
        state.jobs[job_id]["data"] += request.body.decode()
        return 201, {}, b""

    @server.route("PATCH", base + r"/jobs/ingest/(\w+)/?")
    @guarded
    def close(request, job_id):
        job = state.jobs[job_id]
        if request.json()["state"] == "UploadComplete":
            rows = list(csv.DictReader(io.StringIO(job["data"])))
            for row in rows:
                record = {k: v for k, v in row.items() if v != ""}
                try:
                    result = state.upsert(job["object"], job["externalIdFieldName"], record)
                except KeyError as exc:
                    result = {"success": False, "errors": [{"statusCode": "INVALID_FIELD", "message": exc.args[0]}]}
                if not result["success"]:
                    job["failed"].append((row, result["errors"][0]))
            job.update(state="JobComplete", numberRecordsProcessed=len(rows), numberRecordsFailed=len(job["failed"]))
        else:
            job["state"] = request.json()["state"]
        return reply(200, {k: v for k, v in job.items() if k not in ("data", "failed")})

    @server.route("GET", base + r"/jobs/ingest/(\w+)/?")
    @guarded
    def get_job(request, job_id):
        return reply(200, {k: v for k, v in state.jobs[job_id].items() if k not in ("data", "failed")})

    @server.route("GET", base + r"/jobs/ingest/(\w+)/failedResults/?")
    @guarded
    def failed_results(request, job_id):
        failed = state.jobs[job_id]["failed"]
        out = io.StringIO()
        if failed:
            columns = ["sf__Id", "sf__Error", *failed[0][0].keys()]
            writer = csv.DictWriter(out, columns, lineterminator="\n")
            writer.writeheader()
            for row, error in failed:
                writer.writerow({"sf__Id": "", "sf__Error": f"{error['statusCode']}:{error['message']}", **row})
        return 200, {"Content-Type": "text/csv"}, out.getvalue().encode()

    @server.route("GET", base + r"/query/?")
    @guarded
    def query(request):
        return reply(200, soql(state, request.query["q"][0], 0))

    @server.route("GET", base + r"/query/(\d+)-(.+)")
    @guarded
    def query_more(request, start, soql_text):
        from urllib.parse import unquote

        return reply(200, soql(state, unquote(soql_text), int(start)))

    return server, state


def soql(state: SalesforceState, text: str, start: int) -> dict:
    """The SOQL the pull sends: SELECT fields FROM object [WHERE a AND b ...] ORDER BY LastModifiedDate, Id.

    Conditions understood: ``F IN ('a','b')``, ``F > value``, ``F >= value``, ``F = 'x'``; one page
    is ``page_size`` records, the rest behind ``nextRecordsUrl``.
    """
    match = re.match(r"SELECT (.+?) FROM (\w+)(?: WHERE (.+?))?(?: ORDER BY .+)?$", text.strip(), re.DOTALL)
    assert match, text
    fields = [f.strip() for f in match.group(1).split(",")]
    rows = list(state.records[match.group(2)].values())
    for condition in re.split(r"\s+AND\s+", match.group(3) or ""):
        if not condition:
            continue
        name, op, value = re.match(r"(\w+)\s*(IN|>=|>|=)\s*(.+)", condition.strip()).groups()
        if op == "IN":
            values = [v.strip().strip("'") for v in value.strip("() ").split(",")]
            rows = [r for r in rows if str(r.get(name)) in values]
        else:
            value = value.strip().strip("'")
            def key(v, name=name):  # SOQL compares datetimes as instants, whatever their text
                return dt.datetime.fromisoformat(v.replace("Z", "+00:00").replace("+0000", "+00:00")) \
                    if name == "LastModifiedDate" else v
            rows = [r for r in rows if r.get(name) is not None and (
                (op == ">" and key(r[name]) > key(value)) or (op == ">=" and key(r[name]) >= key(value))
                or (op == "=" and r[name] == value))]
    rows.sort(key=lambda r: (r.get("LastModifiedDate") or "", r["Id"]))
    page = rows[start:start + state.page_size]
    out = {"totalSize": len(rows), "done": start + state.page_size >= len(rows),
           "records": [{"attributes": {"type": match.group(2)}, **{f: r.get(f) for f in fields}} for r in page]}
    if not out["done"]:
        from urllib.parse import quote

        out["nextRecordsUrl"] = f"/services/data/v{state.version}/query/{start + state.page_size}-{quote(text, safe='')}"
    return out
