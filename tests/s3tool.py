#!/usr/bin/env python3
"""An S3 client independent of pgarc (boto3) for the object storage tests.

Reads the endpoint and credentials from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY and AWS_REGION.

  s3tool.py copy-down BUCKET PREFIX DIR   every object under PREFIX/ into DIR
  s3tool.py copy-up DIR BUCKET PREFIX     every file under DIR to PREFIX/
  s3tool.py uploads BUCKET                the keys of the open multipart uploads
  s3tool.py keys BUCKET PREFIX            the keys under PREFIX/
  s3tool.py flip BUCKET KEY OFFSET        flips one bit of the object's byte OFFSET
"""
import os
import sys

import boto3
from botocore.config import Config


def client():
    return boto3.client(
        "s3",
        endpoint_url=os.environ["AWS_ENDPOINT_URL"],
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 10}),
    )


def keys(s3, bucket, prefix):
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        out += [o["Key"] for o in page.get("Contents", [])]
    return out


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    s3 = client()
    if cmd == "copy-down":
        bucket, prefix, target = args
        for key in keys(s3, bucket, prefix):
            rel = key[len(prefix) + 1:]
            path = os.path.join(target, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            s3.download_file(bucket, key, path)
    elif cmd == "copy-up":
        source, bucket, prefix = args
        for dirpath, _, files in os.walk(source):
            for f in files:
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, source)
                s3.upload_file(path, bucket, prefix + "/" + rel)
    elif cmd == "uploads":
        (bucket,) = args
        for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            print(u["Key"])
    elif cmd == "keys":
        bucket, prefix = args
        for key in keys(s3, bucket, prefix):
            print(key)
    elif cmd == "flip":
        bucket, key, offset = args
        body = bytearray(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        body[int(offset)] ^= 0x01
        s3.put_object(Bucket=bucket, Key=key, Body=bytes(body))
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main()
