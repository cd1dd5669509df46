/** s3://bucket/prefix: Amazon S3 and S3-compatible servers (Ceph radosgw, MinIO). */
import { configError, boolean, httpUrl, oneOf, optional } from '../../util/setting-values.js';
import { formatBucketLocation, parseBucketLocation, type Driver } from '../driver.js';

export interface S3Options {
  readonly pathStyle: boolean;
  readonly checksum: 'when-required' | 'when-supported';
  readonly endpoint: string | undefined;
  readonly region: string | undefined;
  /** Server-side encryption asked for on every object written; undefined = the bucket's default. */
  readonly sse: 'AES256' | 'aws:kms' | undefined;
  /** The KMS key for SSE-KMS; undefined = the bucket's default key or AWS's aws/s3. */
  readonly sseKmsKeyId: string | undefined;
}

export const s3Driver: Driver<S3Options> = {
  scheme: 's3',
  urlForm: 's3://bucket/prefix',
  parseLocation: parseBucketLocation,
  formatLocation: formatBucketLocation,
  settings: [
    { key: 's3-path-style', env: 'WALBRIDGE_S3_PATH_STYLE', description: 'S3: path-style addressing (most S3-compatible servers need it)', default: 'false' },
    {
      key: 's3-checksum',
      env: 'WALBRIDGE_S3_CHECKSUM',
      value: '<mode>',
      description:
        "S3: the SDK's checksum mode, when-required (works with S3-compatible stores; walbridge always sends Content-MD5) or when-supported (the SDK's CRC32 default, AWS only)",
      default: 'when-required',
    },
    {
      key: 's3-endpoint',
      env: 'WALBRIDGE_S3_ENDPOINT',
      value: '<url>',
      description: 'S3: endpoint URL (default: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, else AWS)',
    },
    { key: 's3-region', env: 'WALBRIDGE_S3_REGION', value: '<region>', description: 'S3: region (default: AWS_REGION / the AWS profile, else us-east-1)' },
    // Server-side encryption: only the commands that write objects take it. Each write is checked to be stored as asked.
    {
      key: 's3-sse',
      env: 'WALBRIDGE_S3_SSE',
      value: '<algorithm>',
      description: "S3: server-side encryption of new objects, AES256 (SSE-S3) or aws:kms (SSE-KMS) (default: the bucket's)",
      forWrites: true,
    },
    {
      key: 's3-sse-kms-key-id',
      env: 'WALBRIDGE_S3_SSE_KMS_KEY_ID',
      value: '<key>',
      description: 'S3: KMS key (id, ARN or alias) for SSE-KMS; implies --s3-sse aws:kms',
      forWrites: true,
    },
  ],
  options(raw) {
    const sseRaw = raw('s3-sse');
    const sse = sseRaw && oneOf(sseRaw, ['AES256', 'aws:kms'] as const, 'AES256 (SSE-S3) or aws:kms (SSE-KMS)');
    const kmsKeyRaw = raw('s3-sse-kms-key-id');
    const sseKmsKeyId = optional(kmsKeyRaw);
    if (sseKmsKeyId !== undefined) {
      // Key ids, ARNs and aliases on AWS; S3-compatible servers take other names. It travels in a header.
      if (!/^[\x21-\x7e]{1,2048}$/.test(sseKmsKeyId))
        throw configError(
          `bad ${kmsKeyRaw!.from} ${JSON.stringify(sseKmsKeyId)}: expected a KMS key id, key ARN or alias (printable ASCII, no spaces)`,
          kmsKeyRaw,
        );
      if (sse === 'AES256') throw configError(`${kmsKeyRaw!.from} names a KMS key, but ${sseRaw!.from} is AES256: use aws:kms or leave it unset`, kmsKeyRaw);
    }
    return {
      pathStyle: boolean(raw('s3-path-style')!),
      checksum: oneOf(raw('s3-checksum')!, ['when-required', 'when-supported'] as const),
      endpoint: httpUrl(raw('s3-endpoint')),
      region: optional(raw('s3-region')),
      sse: sseKmsKeyId !== undefined ? 'aws:kms' : sse,
      sseKmsKeyId,
    };
  },
  environment: /^AWS_/i,
  endpoint: (options) => options.endpoint,
  async open(location, options, { idleTimeoutMs }) {
    const { S3Store } = await import('../s3.js');
    return new S3Store({
      bucket: location['bucket']!,
      prefix: location['prefix']!,
      region: options.region,
      endpoint: options.endpoint,
      pathStyle: options.pathStyle,
      checksum: options.checksum,
      idleTimeoutMs,
      serverSideEncryption: options.sse && { algorithm: options.sse, kmsKeyId: options.sseKmsKeyId },
    });
  },
};
