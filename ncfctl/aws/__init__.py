"""AWS backend: boto3 clients, S3 transfers and SageMaker jobs (real boto3; tested against moto)."""
