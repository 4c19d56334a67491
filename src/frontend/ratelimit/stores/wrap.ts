// How a network store's driver failures reach the rate limiter: as a
// StoreError named for the backend ("postgresql: connection refused"), which
// it answers with db_error_action. One helper for every backend that needs it.
import { StoreError } from '../store.js';
import { certificateFailure } from '../store-tls.js';

/** Runs a store call; a failure that is not already a StoreError becomes one. */
export type StoreCall = <T>(f: () => Promise<T>) => Promise<T>;

export function storeCall(backend: string): StoreCall {
  return async (f) => {
    try {
      return await f();
    } catch (e) {
      throw e instanceof StoreError
        ? e
        : new StoreError(`${backend}: ${certificateFailure(e) ?? (e as Error).message}`);
    }
  };
}
