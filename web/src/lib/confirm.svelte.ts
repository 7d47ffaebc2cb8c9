// "Are you sure?" for destructive actions: one dialog for the app (Confirm.svelte shows it).

class ConfirmState {
  open = $state(false);
  title = $state('');
  body = $state('');
  action = $state('Delete');
  private resolve: ((ok: boolean) => void) | null = null;

  ask(title: string, body: string, action = 'Delete'): Promise<boolean> {
    this.resolve?.(false);
    this.title = title;
    this.body = body;
    this.action = action;
    this.open = true;
    return new Promise((r) => (this.resolve = r));
  }

  answer(ok: boolean): void {
    this.open = false;
    this.resolve?.(ok);
    this.resolve = null;
  }
}

export const confirmer = new ConfirmState();
export const confirmAction = (title: string, body: string, action?: string) => confirmer.ask(title, body, action);
