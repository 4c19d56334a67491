// One conformance suite (support/conformance.ts), run against every real
// backend: SQLite, PostgreSQL, MariaDB and Redis.
import { BACKENDS } from './support/stores.js';
import { storeConformance } from './support/conformance.js';

for (const backend of BACKENDS) storeConformance(backend);
