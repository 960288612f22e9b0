//! The journeys an SSPR user walks, each in a fresh browser against a
//! fresh stack: enrollment by text, call and email, a reset by each, a
//! wrong code and a resend inside the cooldown. They take turns: two
//! cores run one Chromium at a time well.

use tokio::sync::Mutex;

use crate::{browser::Browser, stack::Stack};

/// One browser at a time.
static TURN: Mutex<()> = Mutex::const_new(());

/// The test user's mobile, typed as a person in the US would.
const NATIONAL: &str = "(415) 555-0142";
const PHONE: &str = "+14155550142";
const EMAIL: &str = "casey@contoso.example";
const PASSWORD: &str = "correct horse battery";
const NEW_PASSWORD: &str = "staple mountain river";

/// Registers `account` with a password; the portal then asks for a phone.
async fn register(b: &mut Browser, stack: &Stack, account: &str) {
    b.goto(&stack.portal).await;
    b.wait_for_text("#demo-banner", "memory").await;
    b.shot("home").await;
    b.click("#register").await;
    b.type_into("#account", account).await;
    b.type_into("#password", PASSWORD).await;
    b.type_into("#password2", PASSWORD).await;
    b.shot("register").await;
    b.click("#submit").await;
    b.wait_for_path("/register/phone").await;
}

/// Enters the phone number and picks how to verify it.
async fn enter_phone(b: &mut Browser, how: &str) {
    b.find("#region")
        .await
        .select_by_value("US")
        .await
        .expect("region");
    b.type_into("#number", NATIONAL).await;
    b.shot("phone").await;
    b.click(how).await;
    b.wait_for_path("/verify").await;
}

async fn type_code(b: &mut Browser, code: &str) {
    b.type_into("#code", code).await;
    b.click("#verify").await;
}

/// "Forgot my password": the account, the challenge, then the methods.
/// An hour later on verifyd's clock: past the least gap between two
/// verifications of one number.
async fn start_reset(b: &mut Browser, stack: &Stack, account: &str) {
    stack.clock.advance(std::time::Duration::from_secs(3600));
    b.goto(&stack.portal).await;
    b.click("#reset").await;
    b.type_into("#account", account).await;
    let question = b.text("#challenge-question").await;
    b.type_into("#challenge", &answer(&question).to_string())
        .await;
    b.shot("reset").await;
    b.click("#next").await;
    b.wait_for_path("/reset/method").await;
}

/// Chooses a method, types its full number or address, and sends.
async fn choose(b: &mut Browser, method: &str, confirm: &str) {
    b.click(&format!("#method-{method}")).await;
    b.type_into("#confirm", confirm).await;
    b.shot("methods").await;
    b.click("#send").await;
    b.wait_for_path("/verify").await;
}

/// The new password, twice; then signing in with it works.
async fn set_new_password(b: &mut Browser, stack: &Stack, account: &str) {
    b.wait_for_path("/reset/password").await;
    b.type_into("#password", NEW_PASSWORD).await;
    b.type_into("#password2", NEW_PASSWORD).await;
    b.click("#save").await;
    b.wait_for_path("/reset/done").await;
    b.wait_for_text("h1", "Your password has been reset").await;
    b.shot("reset-done").await;
    b.goto(&format!("{}/login", stack.portal)).await;
    b.type_into("#account", account).await;
    b.type_into("#password", NEW_PASSWORD).await;
    b.click("#sign-in").await;
    b.wait_for_text("#signed-in", account).await;
    b.shot("signed-in").await;
}

/// "What is 7 plus 5?" → 12.
fn answer(question: &str) -> u32 {
    question
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn enrollment_and_a_reset_by_text_with_a_wrong_code_and_an_early_resend() {
    let _turn = TURN.lock().await;
    let stack = Stack::start().await;
    let mut b = Browser::start("text").await;
    register(&mut b, &stack, "casey.text").await;
    enter_phone(&mut b, "#text-me").await;
    let sent_to = b.text("#sent-to").await;
    assert!(
        sent_to.contains("42") && !sent_to.contains("5550142"),
        "masked: {sent_to}"
    );
    b.shot("code-sent").await;

    // A wrong code: the error says so, and how many tries are left.
    let code = stack.texted_code(PHONE, 1).await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    type_code(&mut b, wrong).await;
    let error = b.wait_for_text("#error", "isn't right").await;
    assert!(error.contains("4 tries left"), "{error}");
    b.shot("wrong-code").await;

    // A resend inside the cooldown: the page says how long to wait, and
    // nothing is sent.
    b.click("#resend").await;
    let error = b.wait_for_text("#error", "another code in").await;
    assert!(error.contains("in 30 seconds"), "{error}");
    assert_eq!(stack.texts_to(PHONE), 1);
    b.shot("resend-too-soon").await;

    type_code(&mut b, &code).await;
    b.wait_for_path("/register/email").await;
    b.click("#skip").await;
    b.wait_for_path("/register/done").await;
    let methods = b.text("#methods").await;
    assert!(
        methods.contains("42") && !methods.contains("5550142"),
        "{methods}"
    );
    b.shot("registered").await;

    start_reset(&mut b, &stack, "casey.text").await;
    choose(&mut b, "sms", PHONE).await;
    b.shot("reset-code-sent").await;
    // The reset's own text: the second to the number.
    let reset_code = stack.texted_code(PHONE, 2).await;
    type_code(&mut b, &reset_code).await;
    set_new_password(&mut b, &stack, "casey.text").await;
    b.close().await;
    stack.stop();
}

/// Answers the newest call on the simulated phone (in the phone's own
/// window) and presses `keys`, then goes back to the portal's window.
async fn answer_and_press(b: &mut Browser, stack: &Stack, keys: &str) {
    let portal = b.current_window().await;
    let phone = b.open_window().await;
    b.switch_to(&phone).await;
    b.goto(&format!("{}?refresh=0", stack.phone)).await;
    b.wait_for_text(".call .state", "ringing").await;
    b.shot("phone-ringing").await;
    b.click(".call button.answer").await;
    b.wait_for_text(".call .state", "waiting for keys").await;
    let said = b.text(".call .transcript").await;
    assert!(said.contains("press the pound key"), "{said}");
    for key in keys.chars() {
        b.click(&format!(".call button.key[data-key='{key}']"))
            .await;
    }
    b.wait_for_text(".call .state", "ended").await;
    b.shot("phone-after-keys").await;
    b.client.close_window().await.expect("close the phone");
    b.switch_to(&portal).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn enrollment_and_a_reset_by_a_call_answered_with_pound() {
    let _turn = TURN.lock().await;
    let stack = Stack::start().await;
    let mut b = Browser::start("call").await;
    register(&mut b, &stack, "casey.call").await;
    enter_phone(&mut b, "#call-me").await;
    let instructions = b.text("#call-instructions").await;
    assert!(
        instructions.contains("Answer and press #"),
        "{instructions}"
    );
    b.shot("call-me").await;
    // The page waits on WatchVerification: once # is pressed on the phone,
    // it moves on by itself, no button pressed.
    answer_and_press(&mut b, &stack, "#").await;
    b.wait_for_path("/register/email").await;
    b.shot("phone-enrolled").await;
    b.click("#skip").await;
    b.wait_for_path("/register/done").await;

    start_reset(&mut b, &stack, "casey.call").await;
    choose(&mut b, "voice", NATIONAL).await;
    b.shot("reset-call").await;
    answer_and_press(&mut b, &stack, "#").await;
    set_new_password(&mut b, &stack, "casey.call").await;
    assert_eq!(stack.texts_to(PHONE), 0, "calls only");
    b.close().await;
    stack.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn enrollment_and_a_reset_by_email_through_a_real_smtp_server() {
    let _turn = TURN.lock().await;
    let stack = Stack::start().await;
    let mut b = Browser::start("email").await;
    register(&mut b, &stack, "casey.email").await;
    enter_phone(&mut b, "#text-me").await;
    type_code(&mut b, &stack.texted_code(PHONE, 1).await).await;
    b.wait_for_path("/register/email").await;
    b.type_into("#email", EMAIL).await;
    b.shot("email").await;
    b.click("#email-me").await;
    b.wait_for_path("/verify").await;
    let sent_to = b.text("#sent-to").await;
    assert!(
        sent_to.contains("@contoso.example") && !sent_to.contains("casey@"),
        "{sent_to}"
    );
    b.shot("email-sent").await;
    type_code(&mut b, &stack.emailed_code(EMAIL, 1).await).await;
    b.wait_for_path("/register/done").await;
    let methods = b.text("#methods").await;
    assert!(methods.contains("@contoso.example"), "{methods}");
    b.shot("registered").await;

    start_reset(&mut b, &stack, "casey.email").await;
    choose(&mut b, "email", EMAIL).await;
    type_code(&mut b, &stack.emailed_code(EMAIL, 2).await).await;
    set_new_password(&mut b, &stack, "casey.email").await;
    b.close().await;
    stack.stop();
}
