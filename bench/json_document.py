"""One large JSON document, as AWS tools write them, for the ingest memory measurements (BENCHMARKS.md,
"Ingest memory for any input"): `python3 bench/json_document.py events N OUT` writes a page of
`aws logs filter-log-events` holding N events (Lambda text-format lines, four per invocation);
`python3 bench/json_document.py trail N OUT` a CloudTrail file of N records. OUT ending in .gz is gzip'd."""
import json, sys, random, gzip
kind, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rng = random.Random(1)
op = gzip.open if out.endswith('.gz') else open
with op(out, 'wt') as f:
    if kind == 'events':
        f.write('{"events":[')
        base = 1795910400000
        for i in range(n):
            rid = f"8f507cfc-1a2b-4697-b07a-{i//4:012x}"
            k = i % 4
            ts = base + i * 5
            if k == 0: msg = f"START RequestId: {rid} Version: $LATEST\n"
            elif k == 1: msg = f"2026-11-29T00:00:00.000Z\t{rid}\tINFO\tprocessed order {i} for customer c-{i%9973}\n"
            elif k == 2: msg = f"END RequestId: {rid}\n"
            else: msg = f"REPORT RequestId: {rid}\tDuration: 12.34 ms\tBilled Duration: 13 ms\tMemory Size: 256 MB\tMax Memory Used: 81 MB\t\n"
            if i: f.write(',')
            f.write(json.dumps({"logStreamName": f"2026/11/29/[$LATEST]{(i//4)%50:032x}", "timestamp": ts, "message": msg, "ingestionTime": ts+100, "eventId": f"{i:056d}"}, separators=(',',':')))
        f.write('],"searchedLogStreams":[],"nextToken":"abc"}')
    else:
        f.write('{"Records":[')
        start = 1795910400
        import time
        for n_ in range(n):
            if n_: f.write(',')
            f.write(json.dumps({"eventVersion":"1.09","eventTime":time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start + n_//20)),"eventSource":"s3.amazonaws.com","eventName":"GetObject","awsRegion":"us-east-1","sourceIPAddress":f"10.0.{n_%250}.{n_%199}","userAgent":"aws-sdk-js/3.600.0","userIdentity":{"type":"AssumedRole","principalId":"AROAEXAMPLE:orders","arn":f"arn:aws:sts::123456789012:assumed-role/orders-{n_%20}-role/x","accountId":"123456789012","accessKeyId":f"ASIAEXAMPLE{n_%500:08d}"},"requestParameters":{"key":f"orders/{n_}.json","bucketName":"orders-archive"},"responseElements":None,"requestID":f"{n_:08x}-0000","eventID":f"{n_:08x}-1111-4000-8000-{n_:012x}","readOnly":True,"eventType":"AwsApiCall","managementEvent":False,"recipientAccountId":"123456789012"},separators=(',',':')))
        f.write(']}')
