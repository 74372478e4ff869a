/**
 * Where a run's notebook is for this Jupyter server. Kernels record JPY_SESSION_NAME, which
 * the Jupyter server sets to the notebook's absolute path on disk for the sessions JupyterLab
 * opens; JupyterLab opens documents by their path relative to the server root.
 */

import { PageConfig } from '@jupyterlab/coreutils';

/**
 * The notebook's path relative to the server root: a relative path is taken as relative to
 * it already; null when the path is outside the server root.
 */
export function serverPath(
  notebook: string,
  serverRoot: string = PageConfig.getOption('serverRoot')
): string | null {
  const path = notebook.replace(/\\/g, '/');
  const absolute = path.startsWith('/') || /^[A-Za-z]:\//.test(path);
  if (!absolute) {
    return path.replace(/^(\.\/)+/, '');
  }
  const root = serverRoot.replace(/\\/g, '/').replace(/\/+$/, '');
  if (root && path.startsWith(root + '/')) {
    return path.slice(root.length + 1);
  }
  return null;
}

/** The notebook as the sidebar shows it: relative to the server root when it is inside. */
export function notebookLabel(notebook: string | null): string {
  if (!notebook) {
    return '';
  }
  return serverPath(notebook) ?? notebook;
}
