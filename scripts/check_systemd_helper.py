"""Helpers of scripts/check-systemd that are easier in Python than in bash.

Run with a Python that has boto3 (the LocalStack venv, ~/.cache/buttonparty/localstack-venv):

  send QUEUE_URL FILE            send the JSON lines of FILE (one message body each) in batches
                                 of 10, 8 threads; prints "<n> sent in <s> s"
  bodies register|press PREFIX N [DUPLICATES]
                                 writes N message bodies for players PREFIX0..PREFIX(N-1) as API
                                 Gateway would enqueue them (the RequestBody object), presses
                                 followed by DUPLICATES second presses
  depth QUEUE_URL...             prints the visible + in-flight messages of each queue, summed
  cleanup PREFIX                 deletes the queues, topic, platform application (with its
                                 endpoints) and secrets whose names start with PREFIX
  journal-stats FILE             reads `journalctl -o json` output, finds the stats entries (those
                                 carrying RECEIVED and APPLIED fields) and checks that each
                                 key=value of their MESSAGE is a journal field of the entry;
                                 prints the field names and the sums of APPLIED and RECEIVED
  dns-server ADDR ZONE ANSWER LOG
                                 a tiny DNS server on ADDR:53 (UDP): A queries for ZONE and its
                                 subdomains answer ANSWER, every other name is NXDOMAIN; each
                                 query is logged to LOG
  tls-proxy LISTEN CERT KEY UPSTREAM LOG
                                 terminates TLS on LISTEN (host:port; port 0: any free one, the
                                 log's first line says which) with CERT/KEY and pipes the bytes
                                 to UPSTREAM (host:port); logs each connection to LOG
  free-port                      prints a TCP port of 127.0.0.1 that is free now
  init-file TEMPLATE RESOURCE PATH
                                 prints the content of PATH in RESOURCE's cfn-init metadata
                                 (AWS::CloudFormation::Init, config "host") of the CloudFormation
                                 TEMPLATE, so the instances' files can be tried here
  emf-file FILE                  checks that every line of FILE is a whole EMF JSON document;
                                 prints the number of lines

AWS settings come from the environment (AWS_ENDPOINT_URL, AWS_REGION, credentials).
"""

import concurrent.futures
import json
import os
import socket
import ssl
import struct
import sys
import threading
import time


def _client(name):
    import boto3

    return boto3.client(name, endpoint_url=os.environ.get("AWS_ENDPOINT_URL"))


# ---------------------------------------------------------------- queues


def cmd_send(queue_url, path):
    with open(path, encoding="utf-8") as f:
        bodies = [line.rstrip("\n") for line in f if line.strip()]
    batches = [bodies[i : i + 10] for i in range(0, len(bodies), 10)]
    local = threading.local()

    def send(batch):
        sqs = getattr(local, "sqs", None)
        if sqs is None:
            sqs = local.sqs = _client("sqs")
        entries = [{"Id": str(i), "MessageBody": b} for i, b in enumerate(batch)]
        for attempt in range(10):
            failed = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries).get("Failed", [])
            if not failed:
                return
            ids = {f["Id"] for f in failed}
            entries = [e for e in entries if e["Id"] in ids]
            time.sleep(0.2 * (attempt + 1))
        raise RuntimeError("%d messages not accepted by %s" % (len(entries), queue_url))

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(send, batches))
    print("%d sent in %.2f s" % (len(bodies), time.monotonic() - t0))


def cmd_bodies(kind, prefix, n, duplicates="0"):
    n, duplicates = int(n), int(duplicates)
    for i in range(n):
        body = {"username": "%s%d" % (prefix, i)}
        if kind == "register":
            body["token"] = "check-systemd-token-%s%d" % (prefix, i)
        print(json.dumps(body))
    if kind == "press":
        for i in range(duplicates):
            print(json.dumps({"username": "%s%d" % (prefix, i % n)}))


def cmd_depth(*urls):
    sqs = _client("sqs")
    total = 0
    for url in urls:
        attrs = sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        total += int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])
    print(total)


def cmd_cleanup(prefix):
    sqs, sns, sm = _client("sqs"), _client("sns"), _client("secretsmanager")
    for url in sqs.list_queues(QueueNamePrefix=prefix).get("QueueUrls", []):
        sqs.delete_queue(QueueUrl=url)
    for page in sns.get_paginator("list_topics").paginate():
        for t in page.get("Topics", []):
            if t["TopicArn"].split(":")[-1].startswith(prefix):
                sns.delete_topic(TopicArn=t["TopicArn"])
    for page in sns.get_paginator("list_platform_applications").paginate():
        for app in page.get("PlatformApplications", []):
            arn = app["PlatformApplicationArn"]
            if arn.split("/")[-1].startswith(prefix):
                for ep_page in sns.get_paginator("list_endpoints_by_platform_application").paginate(
                    PlatformApplicationArn=arn
                ):
                    for ep in ep_page.get("Endpoints", []):
                        sns.delete_endpoint(EndpointArn=ep["EndpointArn"])
                sns.delete_platform_application(PlatformApplicationArn=arn)
    for page in sm.get_paginator("list_secrets").paginate():
        for s in page.get("SecretList", []):
            if s["Name"].startswith(prefix):
                sm.delete_secret(SecretId=s["ARN"], ForceDeleteWithoutRecovery=True)


# ---------------------------------------------------------------- journal

# Fields every journal entry may carry that are not the event's own.
_STANDARD = {
    "MESSAGE",
    "PRIORITY",
    "SYSLOG_IDENTIFIER",
    "SYSLOG_FACILITY",
    "SYSLOG_PID",
    "SYSLOG_TIMESTAMP",
    "CODE_FILE",
    "CODE_LINE",
    "CODE_FUNC",
    "CODE_MODULE",
    "TARGET",
    "INVOCATION_ID",
    "UNIT",
    "USER_UNIT",
}


def cmd_journal_stats(path):
    entries = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                entries.append(json.loads(line))
    stats = [e for e in entries if "RECEIVED" in e and "APPLIED" in e]
    if not stats:
        print("no journal entry carries RECEIVED and APPLIED fields", file=sys.stderr)
        return 1
    problems = []
    names = set()
    applied = received = 0
    for e in stats:
        message = e.get("MESSAGE", "")
        if isinstance(message, list):  # journalctl prints non-UTF-8 values as byte arrays
            message = bytes(message).decode("utf-8", "replace")
        own = {k for k in e if not k.startswith("_") and not k.startswith("__") and k not in _STANDARD}
        names |= own
        # The message text is `stats key=value key=value ...`: every key must be a field too.
        keys = set()
        for word in message.split()[1:]:
            if "=" in word:
                key = word.split("=", 1)[0]
                if key.replace("_", "").isalnum():
                    keys.add(key.upper())
        missing = keys - own
        if missing:
            problems.append("entry at %s: %s in the message but not journal fields" % (e.get("__REALTIME_TIMESTAMP"), sorted(missing)))
        try:
            applied += int(e["APPLIED"])
            received += int(e["RECEIVED"])
        except (TypeError, ValueError):
            problems.append("APPLIED/RECEIVED not integers: %r %r" % (e["APPLIED"], e["RECEIVED"]))
    print("entries=%d fields=%s applied=%d received=%d" % (len(stats), ",".join(sorted(names)), applied, received))
    for p in problems:
        print("problem: " + p, file=sys.stderr)
    return 1 if problems else 0


# ---------------------------------------------------------------- DNS


def _dns_answer(query, zone, answer):
    ident, flags, qdcount = struct.unpack("!HHH", query[:6])
    if qdcount != 1:
        return None, None
    pos, labels = 12, []
    while True:
        length = query[pos]
        pos += 1
        if length == 0:
            break
        labels.append(query[pos : pos + length].decode("ascii", "replace").lower())
        pos += length
    qtype, _qclass = struct.unpack("!HH", query[pos : pos + 4])
    question = query[12 : pos + 4]
    name = ".".join(labels)
    inside = name == zone or name.endswith("." + zone)
    rd = flags & 0x0100
    if not inside:
        header = struct.pack("!HHHHHH", ident, 0x8180 | rd | 3, 1, 0, 0, 0)  # NXDOMAIN
        return name, header + question
    if qtype != 1:  # only A records: AAAA and the rest get an empty NOERROR answer
        return name, struct.pack("!HHHHHH", ident, 0x8580 | rd, 1, 0, 0, 0) + question
    rr = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 5, 4) + socket.inet_aton(answer)
    return name, struct.pack("!HHHHHH", ident, 0x8580 | rd, 1, 1, 0, 0) + question + rr


def cmd_dns_server(addr, zone, answer, log):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((addr, 53))
    zone = zone.lower().rstrip(".")
    with open(log, "a", buffering=1, encoding="utf-8") as out:
        out.write("listening %s:53\n" % addr)
        while True:
            data, peer = sock.recvfrom(4096)
            try:
                name, reply = _dns_answer(data, zone, answer)
            except Exception as e:  # a malformed query: ignore it
                out.write("bad query from %s: %s\n" % (peer, e))
                continue
            if reply:
                out.write("query %s type=%d from %s:%d\n" % (name, struct.unpack("!H", data[-4:-2])[0], *peer))
                sock.sendto(reply, peer)


# ---------------------------------------------------------------- TLS proxy


def _pipe(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def cmd_tls_proxy(listen, cert, key, upstream, log):
    host, port = listen.rsplit(":", 1)
    up_host, up_port = upstream.rsplit(":", 1)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((host, int(port)))
    server.listen(64)
    with open(log, "a", buffering=1, encoding="utf-8") as out:
        ctx.sni_callback = lambda _sock, name, _ctx: out.write("sni %s\n" % name) and None
        out.write("listening %s:%d\n" % server.getsockname())
        while True:
            raw, peer = server.accept()

            def serve(raw=raw, peer=peer):
                try:
                    conn = ctx.wrap_socket(raw, server_side=True)
                except (ssl.SSLError, OSError) as e:
                    out.write("handshake from %s:%d failed: %s\n" % (*peer, e))
                    raw.close()
                    return
                out.write("tls from %s:%d %s\n" % (*peer, conn.version()))
                up = socket.create_connection((up_host, int(up_port)))
                threading.Thread(target=_pipe, args=(conn, up), daemon=True).start()
                _pipe(up, conn)

            threading.Thread(target=serve, daemon=True).start()


def cmd_free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])


def cmd_init_file(template, resource, path):
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    # CloudFormation's short-form tags (!Ref, !Sub, ...): their values are not needed here.
    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    with open(template, encoding="utf-8") as f:
        doc = yaml.load(f, Loader=Loader)
    content = doc["Resources"][resource]["Metadata"]["AWS::CloudFormation::Init"]["host"]["files"][path]["content"]
    if not isinstance(content, str):
        raise SystemExit("%s is not a plain text file in %s" % (path, resource))
    sys.stdout.write(content)


def cmd_emf_file(path):
    n = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            if "CloudWatchMetrics" not in doc.get("_aws", {}):
                raise SystemExit("line %d is not an EMF document: %s" % (n + 1, line[:200]))
            n += 1
    print(n)
    return 0 if n else 1


def main(argv):
    commands = {
        "init-file": cmd_init_file,
        "emf-file": cmd_emf_file,
        "free-port": cmd_free_port,
        "send": cmd_send,
        "bodies": cmd_bodies,
        "depth": cmd_depth,
        "cleanup": cmd_cleanup,
        "journal-stats": cmd_journal_stats,
        "dns-server": cmd_dns_server,
        "tls-proxy": cmd_tls_proxy,
    }
    if len(argv) < 2 or argv[1] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    return commands[argv[1]](*argv[2:]) or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
