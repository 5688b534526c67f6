// Calls /keyvault/api through Jupyter's ServerConnection (token, XSRF cookie, base URL handled).
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export interface ProviderInfo {
  id: string;
  label: string;
  env_var: string | null;
  key_hint: string | null;
  needs_key: boolean;
}

export interface OAuthInfo {
  provider: string;
  scopes?: string[];
  expires_at?: string | null;
  needs_reauth?: boolean;
}

export interface Credential {
  name: string;
  provider: string | null;
  type: string;
  present: boolean;
  source: string;
  created_at: string | null;
  updated_at: string | null;
  last_used_at: string | null;
  metadata: { notebooks?: string[]; [key: string]: unknown };
  oauth?: OAuthInfo;
}

export interface Status {
  protection: { source: string; strong: boolean; detail: string };
  backend: string;
  credentials: number;
  warnings: string[];
  notebook_warnings?: string[];
  providers: ProviderInfo[];
  oauth_providers?: { id: string; display_name: string }[];
  version?: string;
}

export interface AccessToken {
  id: string;
  name: string;
  credentials: string[];
  created_at: string | null;
  last_used_at: string | null;
  expires_at: string | null;
}

export interface TestResult {
  ok: boolean;
  detail?: string;
  error?: string;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string
  ) {
    super(message);
  }
}

export class KeyVaultApi {
  readonly settings = ServerConnection.makeSettings();

  url(...parts: string[]): string {
    return URLExt.join(
      this.settings.baseUrl,
      'keyvault/api',
      ...parts.map(encodeURIComponent)
    );
  }

  /** One request; JSON in and out; a non-2xx status becomes an ApiError with the server's message. */
  async call<T>(method: string, parts: string[], body?: unknown): Promise<T> {
    const init: RequestInit = { method, cache: 'no-store' };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers = { 'Content-Type': 'application/json' };
    }
    let response: Response;
    try {
      response = await ServerConnection.makeRequest(
        this.url(...parts),
        init,
        this.settings
      );
    } catch (error) {
      throw new ApiError(0, `the Jupyter server did not answer (${error})`);
    }
    const text = await response.text();
    let data: any = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!response.ok) {
      const message =
        (data && (data.message || data.reason)) ||
        `${response.status} ${response.statusText}`;
      throw new ApiError(response.status, message);
    }
    return data as T;
  }

  status(): Promise<Status> {
    return this.call<Status>('GET', ['status']);
  }

  async credentials(): Promise<Credential[]> {
    return (
      await this.call<{ credentials: Credential[] }>('GET', ['credentials'])
    ).credentials;
  }

  /** Store a value. The caller has already cleared its input; the value lives only in this call. */
  save(
    name: string,
    value: string,
    provider: string | null,
    metadata: Record<string, unknown>
  ): Promise<unknown> {
    return this.call('PUT', ['credentials', name], {
      value,
      provider,
      metadata
    });
  }

  test(name: string): Promise<TestResult> {
    return this.call<TestResult>('POST', ['credentials', name, 'test'], {});
  }

  remove(name: string): Promise<unknown> {
    return this.call('DELETE', ['credentials', name]);
  }

  updateMetadata(
    name: string,
    metadata: Record<string, unknown>
  ): Promise<Credential> {
    return this.call<Credential>('PATCH', ['credentials', name], { metadata });
  }

  /** null when the server has no token routes (404): the UI then hides the section. */
  async tokens(): Promise<AccessToken[] | null> {
    try {
      return (await this.call<{ tokens: AccessToken[] }>('GET', ['tokens']))
        .tokens;
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

  createToken(
    name: string,
    credentials: string[],
    expiresInDays: number | null
  ): Promise<AccessToken & { token: string }> {
    return this.call('POST', ['tokens'], {
      name,
      credentials,
      expires_in_days: expiresInDays
    });
  }

  deleteToken(id: string): Promise<unknown> {
    return this.call('DELETE', ['tokens', id]);
  }

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
