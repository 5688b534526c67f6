// Calls /keyvault/api through Jupyter's ServerConnection (token, XSRF cookie, base URL handled).
// Every path, request body and response type comes from openapi.d.ts, generated from
// jupyter_keyvault/openapi.json (npm run generate:api; npm run check:api fails when it is stale).
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import type { components, paths } from './openapi';

type Schemas = components['schemas'];

/** Credentials per listing request: the server's default page (store/pages.py DEFAULT_PAGE). */
const PAGE_SIZE = 100;

export type Credential = Schemas['Credential'];
export type AccessToken = Schemas['AccessToken'];
export type CreatedAccessToken = Schemas['CreatedAccessToken'];
export type TestResult = Schemas['TestResult'];
/** The provider ids the server accepts in a write. */
export type ProviderId = NonNullable<Schemas['CredentialWrite']['provider']>;

/**
 * One entry of Status.providers. openapi.json describes the items only as objects:
 * these fields are what the server sends (providers.Provider.to_json) and the UI reads.
 */
export interface ProviderInfo {
  id: ProviderId;
  label: string;
  env_var: string | null;
  key_hint: string | null;
  needs_key: boolean;
}

/** GET status as served: the documented schema plus what openapi.json leaves undescribed. */
export type Status = Omit<Schemas['Status'], 'providers'> & {
  providers?: ProviderInfo[];
  notebook_warnings?: string[];
};

/** The vault could not be opened (damaged file, wrong key, unreachable hub): `detail` says why. */
export function vaultUnavailable(status: Status): boolean {
  return status.protection.source === 'unavailable';
}

type ApiPath = keyof paths;
type Method = 'get' | 'put' | 'post' | 'delete' | 'patch';
/** The methods openapi.json documents for a path (the others are generated as `?: never`). */
type MethodOf<P extends ApiPath> = {
  [M in Method]: paths[P][M] extends undefined ? never : M;
}[Method];
type Operation<P extends ApiPath, M extends Method> = NonNullable<paths[P][M]>;
type PathParams<P extends ApiPath> = paths[P]['parameters'] extends {
  path: infer Params;
}
  ? Params
  : Record<never, never>;
/** The query parameters openapi.json documents for an operation (none: an empty object). */
type QueryParams<O> = O extends { parameters: { query?: infer Query } }
  ? [Query] extends [undefined]
    ? Record<never, never>
    : Partial<NonNullable<Query>>
  : Record<never, never>;
type JsonContent<R> = R extends { content: { 'application/json': infer Body } }
  ? Body
  : never;
/** The JSON of the documented 200/201 response; null where a 204 (no body) is documented. */
type ResponseJson<O> = O extends { responses: infer R }
  ? | JsonContent<R[Extract<keyof R, 200 | 201>]>
    | (204 extends keyof R ? null : never)
  : never;
/** The JSON request body as a rest argument: absent where openapi.json documents none. */
type BodyArgument<O> = O extends {
  requestBody: { content: { 'application/json': infer Body } };
}
  ? [body: Body]
  : [];

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string
  ) {
    super(message);
  }
}

/** The server's message of an error response (tornado's JSON error: message, else reason). */
function serverMessage(data: unknown): string | null {
  if (typeof data !== 'object' || data === null) {
    return null;
  }
  const { message, reason } = data as Schemas['Error'];
  return message || reason || null;
}

export class KeyVaultApi {
  readonly settings = ServerConnection.makeSettings();

  /** The URL of a documented path, each {parameter} percent-encoded; the other params form the query. */
  url<P extends ApiPath>(path: P, params: PathParams<P>): string {
    const values: Record<string, unknown> = {
      ...(params as Record<string, unknown>)
    };
    const filled = path.slice(1).replace(/\{(\w+)\}/g, (_, key: string) => {
      const value = encodeURIComponent(String(values[key]));
      delete values[key];
      return value;
    });
    const query = Object.entries(values)
      .filter(([, value]) => value !== undefined && value !== null)
      .map(
        ([key, value]) =>
          `${encodeURIComponent(key)}=${encodeURIComponent(String(value))}`
      )
      .join('&');
    const url = URLExt.join(this.settings.baseUrl, filled);
    return query ? `${url}?${query}` : url;
  }

  /** One request; JSON in and out; a non-2xx status becomes an ApiError with the server's message. */
  async call<P extends ApiPath, M extends MethodOf<P>>(
    method: M,
    path: P,
    params: PathParams<P> & QueryParams<Operation<P, M>>,
    ...body: BodyArgument<Operation<P, M>>
  ): Promise<ResponseJson<Operation<P, M>>> {
    // fetch upper-cases only some methods itself: PATCH must be sent upper-case.
    const init: RequestInit = {
      method: method.toUpperCase(),
      cache: 'no-store'
    };
    if (body.length) {
      init.body = JSON.stringify(body[0]);
      init.headers = { 'Content-Type': 'application/json' };
    }
    let response: Response;
    try {
      response = await ServerConnection.makeRequest(
        this.url(path, params),
        init,
        this.settings
      );
    } catch (error) {
      throw new ApiError(
        0,
        `the Jupyter server did not answer (${String(error)})`
      );
    }
    const text = await response.text();
    let data: unknown = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!response.ok) {
      const message =
        serverMessage(data) || `${response.status} ${response.statusText}`;
      throw new ApiError(response.status, message);
    }
    // The one unchecked step: the server's answer is trusted to match openapi.json
    // (tests/test_server_rest.py validates real responses against it).
    return data as ResponseJson<Operation<P, M>>;
  }

  async status(): Promise<Status> {
    // openapi.json types Status.providers only as objects: narrowed to ProviderInfo here.
    return (await this.call('get', '/keyvault/api/status', {})) as Status;
  }

  /** Every credential, read a page at a time (the server's default page size). */
  async credentials(): Promise<Credential[]> {
    const all: Credential[] = [];
    const seen = new Set<string>();
    let cursor: string | null = null;
    do {
      const page: { credentials: Credential[]; next: string | null } =
        await this.call(
          'get',
          '/keyvault/api/credentials',
          cursor === null ? { limit: PAGE_SIZE } : { limit: PAGE_SIZE, cursor }
        );
      all.push(...page.credentials);
      cursor = page.next;
      if (cursor !== null && seen.has(cursor)) {
        throw new ApiError(0, 'the server repeated a page of the key list');
      }
      if (cursor !== null) {
        seen.add(cursor);
      }
    } while (cursor !== null);
    return all;
  }

  /** Store a value. The caller has already cleared its input; the value lives only in this call. */
  save(
    name: string,
    value: string,
    provider: ProviderId | null,
    metadata: Record<string, unknown>,
    session = false
  ): Promise<unknown> {
    return this.call(
      'put',
      '/keyvault/api/credentials/{name}',
      { name },
      {
        value,
        provider,
        metadata,
        ...(session ? { session: true } : {})
      }
    );
  }

  test(name: string): Promise<TestResult> {
    return this.call('post', '/keyvault/api/credentials/{name}/test', {
      name
    });
  }

  remove(name: string): Promise<unknown> {
    return this.call('delete', '/keyvault/api/credentials/{name}', { name });
  }

  updateMetadata(
    name: string,
    metadata: Schemas['MetadataWrite']['metadata']
  ): Promise<Credential> {
    return this.call(
      'patch',
      '/keyvault/api/credentials/{name}',
      { name },
      {
        metadata
      }
    );
  }

  /** null when the server has no token routes (404): the UI then hides the section. */
  async tokens(): Promise<AccessToken[] | null> {
    try {
      return (await this.call('get', '/keyvault/api/tokens', {})).tokens;
    } catch (error) {
      if (
        error instanceof ApiError &&
        (error.status === 404 || error.status === 405)
      ) {
        return null;
      }
      throw error;
    }
  }

  /** expiresInDays null: the field is left out and the server's default applies. */
  createToken(
    name: string,
    credentials: string[],
    expiresInDays: number | null
  ): Promise<CreatedAccessToken> {
    return this.call(
      'post',
      '/keyvault/api/tokens',
      {},
      {
        name,
        credentials,
        ...(expiresInDays === null ? {} : { expires_in_days: expiresInDays })
      }
    );
  }

  deleteToken(id: string): Promise<unknown> {
    return this.call('delete', '/keyvault/api/tokens/{token_id}', {
      token_id: id
    });
  }

  /** Not an operation of openapi.json: a browser navigation that ends in a redirect back to `next`. */
  oauthStartUrl(providerId: string, name: string, next: string): string {
    const base = URLExt.join(
      this.settings.baseUrl,
      'keyvault/oauth',
      encodeURIComponent(providerId),
      'start'
    );
    return `${base}?name=${encodeURIComponent(name)}&next=${encodeURIComponent(next)}`;
  }
}
