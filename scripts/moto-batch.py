#!/usr/bin/env python3
"""Creates, on a moto server, what terraform/modules/aws creates in a real account: the
service role, an AWS Batch compute environment and job queue, and the data and results
buckets. Idempotent. Used by the AWS tests, the benchmark and `scripts/aws-moto.sh`.

moto's Batch runs each job as a container on the local Docker engine."""
import argparse
import boto3
import botocore


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--endpoint", default="http://127.0.0.1:5000")
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--queue", default="brizo-jobs")
    p.add_argument("--bucket", action="append", default=[], help="bucket to create (repeatable)")
    a = p.parse_args()
    kw = dict(endpoint_url=a.endpoint, region_name=a.region, aws_access_key_id="testing", aws_secret_access_key="testing")
    iam, batch, s3 = boto3.client("iam", **kw), boto3.client("batch", **kw), boto3.client("s3", **kw)
    try:
        role = iam.get_role(RoleName="brizo-batch-service")["Role"]["Arn"]
    except botocore.exceptions.ClientError:
        role = iam.create_role(RoleName="brizo-batch-service", AssumeRolePolicyDocument='{"Version":"2012-10-17","Statement":[]}')["Role"]["Arn"]
    envs = batch.describe_compute_environments(computeEnvironments=["brizo-dev"])["computeEnvironments"]
    if envs:
        env = envs[0]["computeEnvironmentArn"]
    else:
        # UNMANAGED: moto runs the jobs itself, on the local engine; no instances to describe.
        env = batch.create_compute_environment(computeEnvironmentName="brizo-dev", type="UNMANAGED", state="ENABLED", serviceRole=role)["computeEnvironmentArn"]
    if not batch.describe_job_queues(jobQueues=[a.queue])["jobQueues"]:
        batch.create_job_queue(jobQueueName=a.queue, state="ENABLED", priority=1, computeEnvironmentOrder=[{"order": 1, "computeEnvironment": env}])
    for bucket in a.bucket:
        try:
            s3.create_bucket(Bucket=bucket)
        except (s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
            pass
    print(f"queue {a.queue} on {a.endpoint}; buckets: {', '.join(a.bucket) or 'none'}")


if __name__ == "__main__":
    main()
