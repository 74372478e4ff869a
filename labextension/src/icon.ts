/** The sidebar's icon: a journal page with recorded steps and a resume arrow. */

import { LabIcon } from '@jupyterlab/ui-components';

const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M5 2h10l4 4v7.2a6.5 6.5 0 0 0-2-.2V7h-3V4H7v16h5.3c.3.7.7 1.4 1.2 2H5z"/>
    <rect x="9" y="9" width="6" height="1.8" rx=".9"/>
    <rect x="9" y="13" width="4" height="1.8" rx=".9"/>
    <circle cx="7.6" cy="9.9" r=".9"/>
    <circle cx="7.6" cy="13.9" r=".9"/>
    <path d="M18 14.5a4.5 4.5 0 1 0 4.4 5.4h-1.9a2.7 2.7 0 1 1-.7-2.7L18 19h5v-5l-1.9 1.9a4.5 4.5 0 0 0-3.1-1.4z"/>
  </g>
</svg>`;

export const durableIcon = new LabIcon({ name: 'durable-nb:runs', svgstr: svg });
