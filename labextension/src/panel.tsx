/** The "Durable runs" sidebar panel: list or detail view, notices, polling while shown. */

import { ReactWidget } from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import * as React from 'react';

import { RunsModel } from './model';
import { IRunActions, RunDetail } from './runDetail';
import { RunList } from './runList';

export class RunsPanel extends ReactWidget {
  constructor(
    readonly model: RunsModel,
    private readonly actions: IRunActions
  ) {
    super();
    this.addClass('dnb-sidebar');
  }

  render(): JSX.Element {
    return <SidebarView model={this.model} actions={this.actions} />;
  }

  dispose(): void {
    this.model.dispose();
    super.dispose();
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this.model.start();
  }

  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    if (this.isVisible) {
      this.model.start();
    }
  }

  protected onBeforeHide(msg: Message): void {
    super.onBeforeHide(msg);
    this.model.stop();
  }

  protected onBeforeDetach(msg: Message): void {
    this.model.stop();
    super.onBeforeDetach(msg);
  }
}

/** Re-render whenever the model changes. */
function useModel(model: RunsModel): void {
  const [, setVersion] = React.useState(0);
  React.useEffect(() => {
    const bump = () => setVersion(v => v + 1);
    model.changed.connect(bump);
    return () => {
      model.changed.disconnect(bump);
    };
  }, [model]);
}

function SidebarView(props: { model: RunsModel; actions: IRunActions }): JSX.Element {
  const { model } = props;
  useModel(model);
  return (
    <div className="dnb-sidebar-body">
      <header className="dnb-sidebar-header">
        <h2>Durable runs</h2>
      </header>
      {model.notice && (
        <div
          className={
            `dnb-notice dnb-notice-${model.notice.kind}` +
            (model.notice.kind === 'error' ? ' dnb-error' : ' dnb-message')
          }
          role={model.notice.kind === 'error' ? 'alert' : 'status'}
        >
          <span className="dnb-notice-text">{model.notice.text}</span>
          <button
            className="jp-Button jp-mod-minimal dnb-dismiss"
            aria-label="Dismiss"
            onClick={() => model.dismissNotice()}
          >
            ×
          </button>
        </div>
      )}
      {model.selected === null ? (
        <RunList model={model} />
      ) : (
        <RunDetail
          runId={model.selected}
          detail={model.detail}
          error={model.detailError}
          actions={props.actions}
          onBack={() => model.select(null)}
        />
      )}
    </div>
  );
}
