/**
 * The benchmark's own view of the S3 server (plain http, outside any measurement): create a
 * bucket per row, add up what each tool stored, and empty buckets between phases so that the
 * memstore OSD, which keeps every object in RAM, stays bounded.
 */
import { CreateBucketCommand, DeleteBucketCommand, DeleteObjectsCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import type { Radosgw } from '../../test/servers/radosgw.js';

export interface StoredObject {
  key: string;
  size: number;
}

/** A WAL segment name in an object key: walbridge `…/wal/<name>`, pgBackRest `…/<name>-<sha1>.zst`, barman `…/<name>.gz`. */
const SEGMENT_IN_KEY = /(?:^|\/)([0-9A-F]{24})(?:[-.][^/]*)?$/;

export class BenchS3 {
  private readonly client: S3Client;

  constructor(rgw: Radosgw) {
    process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true';
    this.client = new S3Client({
      endpoint: rgw.endpoint,
      region: rgw.region,
      forcePathStyle: true,
      credentials: { accessKeyId: rgw.accessKey, secretAccessKey: rgw.secretKey },
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
  }

  async createBucket(bucket: string): Promise<void> {
    await this.client.send(new CreateBucketCommand({ Bucket: bucket }));
  }

  async list(bucket: string): Promise<StoredObject[]> {
    const out: StoredObject[] = [];
    let token: string | undefined;
    do {
      const page = await this.client.send(new ListObjectsV2Command({ Bucket: bucket, ContinuationToken: token }));
      for (const o of page.Contents ?? []) out.push({ key: o.Key!, size: o.Size ?? 0 });
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return out;
  }

  /** Stored size per WAL segment name (other objects: identity, archive.info, ... left out). */
  async segmentSizes(bucket: string): Promise<Map<string, number>> {
    const sizes = new Map<string, number>();
    for (const o of await this.list(bucket)) {
      const m = SEGMENT_IN_KEY.exec(o.key);
      if (m) sizes.set(m[1]!, (sizes.get(m[1]!) ?? 0) + o.size);
    }
    return sizes;
  }

  /** Delete every object and the bucket itself. */
  async removeBucket(bucket: string): Promise<void> {
    for (;;) {
      const page = await this.client.send(new ListObjectsV2Command({ Bucket: bucket, MaxKeys: 1000 }));
      const keys = (page.Contents ?? []).map((o) => ({ Key: o.Key! }));
      if (keys.length === 0) break;
      await this.client.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys, Quiet: true } }));
    }
    await this.client.send(new DeleteBucketCommand({ Bucket: bucket }));
  }

  destroy(): void {
    this.client.destroy();
  }
}
