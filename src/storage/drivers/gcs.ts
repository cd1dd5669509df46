/** gs://bucket/prefix: Google Cloud Storage (its JSON API). */
import { configError, httpUrl, optional } from '../../util/setting-values.js';
import { formatBucketLocation, parseBucketLocation, type Driver } from '../driver.js';

export interface GcsOptions {
  readonly endpoint: string | undefined;
  /** The Cloud KMS key (CMEK) every object written is encrypted with; undefined = the bucket's default. */
  readonly kmsKeyName: string | undefined;
}

/** A Cloud KMS crypto key's resource name (project ids may be domain-scoped: example.com:proj). */
const CRYPTO_KEY_NAME = /^projects\/[a-z0-9][a-z0-9.:-]*\/locations\/[a-z0-9-]+\/keyRings\/[A-Za-z0-9_-]{1,63}\/cryptoKeys\/[A-Za-z0-9_-]{1,63}$/;

export const gcsDriver: Driver<GcsOptions> = {
  scheme: 'gs',
  urlForm: 'gs://bucket/prefix',
  parseLocation: parseBucketLocation,
  formatLocation: formatBucketLocation,
  settings: [
    { key: 'gcs-endpoint', env: 'WALBRIDGE_GCS_ENDPOINT', value: '<url>', description: 'GCS: API endpoint (default: STORAGE_EMULATOR_HOST, else Google)' },
    {
      key: 'gcs-kms-key-name',
      env: 'WALBRIDGE_GCS_KMS_KEY_NAME',
      value: '<name>',
      description: "GCS: Cloud KMS key (CMEK) for new objects, projects/P/locations/L/keyRings/R/cryptoKeys/K (default: the bucket's)",
      forWrites: true,
    },
  ],
  options(raw) {
    const keyRaw = raw('gcs-kms-key-name');
    const kmsKeyName = optional(keyRaw);
    if (kmsKeyName !== undefined && !CRYPTO_KEY_NAME.test(kmsKeyName)) {
      const version = /\/cryptoKeyVersions\//.test(kmsKeyName) ? ' without /cryptoKeyVersions/N (Cloud Storage uses the primary version)' : '';
      throw configError(
        `bad ${keyRaw!.from} ${JSON.stringify(kmsKeyName)}: expected projects/PROJECT/locations/LOCATION/keyRings/RING/cryptoKeys/KEY${version}`,
        keyRaw,
      );
    }
    return { endpoint: httpUrl(raw('gcs-endpoint')), kmsKeyName };
  },
  environment: /^(GOOGLE_|GCLOUD_|CLOUDSDK_|STORAGE_EMULATOR_HOST$)/i,
  endpoint: (options) => options.endpoint,
  async open(location, options, { idleTimeoutMs }) {
    const { GcsStore } = await import('../gcs.js');
    return new GcsStore({
      bucket: location['bucket']!,
      prefix: location['prefix']!,
      endpoint: options.endpoint,
      idleTimeoutMs,
      kmsKeyName: options.kmsKeyName,
    });
  },
};
